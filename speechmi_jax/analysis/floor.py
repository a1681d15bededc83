"""Did pretraining teach the SSL models anything? Each zoo model's best layer against its floors.

A self-supervised model's best layer is compared, on phone MI (the probe bound) and linear-CTC
PER, with what it could have got without learning: its own random initialisation
(``<name>@step0``), its input (``logmel``) and its input with context (``logmel-stack4``: the
log-mel frames t - 4 .. t + 4 side by side; for a causal model also ``logmel-past8``, frames
t - 8 .. t: the context it can see, since its frame t never sees the 40 ms after it that
``logmel-stack4`` holds). Each comparison is decided from the 95 % CIs of the
two best layers: **beats** when the model's interval lies wholly on the better side of the
floor's, **below** when wholly on the worse side, **within CIs** otherwise. For PER the margin
in points is shown too (the zoo's bar: at least 10 points better).

This is the question a run with a few zoo models can answer, so the report opens with it (the
selection analysis needs many checkpoints to reach a verdict).
"""

from __future__ import annotations

from speechmi_jax import zoo
from speechmi_jax.analysis import correlation as corr
from speechmi_jax.analysis.formatting import fmt_ci
from speechmi_jax.analysis.results import as_results

PHONE, PER = "phone_mi", "ctc_per"
BASELINES = ("logmel-stack4", "logmel-past8", "logmel")
CAUSAL_FLOOR = "logmel-past8"  # a floor for causal models only


def verdict(model, floor, higher_is_better: bool) -> str:
    """'beats' / 'below' / 'within CIs' from two records' intervals."""
    if higher_is_better:
        better, worse = model.ci[0] > floor.ci[1], model.ci[1] < floor.ci[0]
    else:
        better, worse = model.ci[1] < floor.ci[0], model.ci[0] > floor.ci[1]
    return "beats" if better else "below" if worse else "within CIs"


def final_models(res) -> list[str]:
    """The encoders of the results that are a zoo model's latest checkpoint present (not step 0)."""
    latest: dict[str, tuple[int, str]] = {}
    for enc in res.encoders():
        if not zoo.is_zoo_name(enc):
            continue
        name, step = zoo.parse(enc)
        if step and (name not in latest or step > latest[name][0]):
            latest[name] = (step, enc)
    return [enc for _, enc in latest.values()]


def floors_of(res, encoder: str) -> list[str]:
    """The floors present in the results for a zoo checkpoint: its step 0, then the baselines
    (the causal context floor for a causal model only)."""
    name = zoo.parse(encoder)[0]
    step0 = [e for e in res.encoders() if zoo.is_zoo_name(e) and zoo.parse(e) == (name, 0)]
    return step0 + [b for b in BASELINES if b in res.encoders()
                    and (b != CAUSAL_FLOOR or zoo.is_causal(encoder))]


def rows(results) -> list[dict]:
    """One row per (final zoo model, floor, measure) with both best-layer records and the verdict."""
    res = as_results(results)
    out = []
    for enc in final_models(res):
        for floor in floors_of(res, enc):
            for measure, higher in ((PHONE, True), (PER, False)):
                m, f = corr.best_layer(res, enc, measure), corr.best_layer(res, floor, measure)
                if m is None or f is None:
                    continue
                out.append(dict(model=enc, floor=floor, measure=measure, record=m, floor_record=f,
                                verdict=verdict(m, f, higher),
                                margin=(m.value - f.value) if higher else (f.value - m.value)))
    return out


def section(results) -> list[str]:
    """The report's opening section (empty when the results hold no zoo model with a floor)."""
    table = rows(results)
    if not table:
        return []
    causal = ("for a causal model log-mel with the 8 frames before stacked (the context it can "
              "see), " if any(r["floor"] == CAUSAL_FLOOR for r in table) else "")
    lines = ["## Did pretraining teach the SSL models anything?", "",
             "Each zoo model's best layer against its floors: its own initialisation (`@step0`), "
             f"log-mel with ±4 frames stacked (context alone), {causal}and log-mel. **beats**: "
             "the 95 % CIs do not overlap, on the better side.", "",
             "| model | floor | measure | model (best layer) | floor (best layer) | margin | verdict |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in table:
        unit = "bits" if r["measure"] == PHONE else "points"
        lines.append(f"| {r['model']} | {r['floor']} | `{r['measure']}` | {fmt_ci(r['record'])} "
                     f"(layer {r['record'].layer}) | {fmt_ci(r['floor_record'])} (layer "
                     f"{r['floor_record'].layer}) | {r['margin']:+.2f} {unit} | **{r['verdict']}** |")
    for enc in final_models(results):
        mine = [r for r in table if r["model"] == enc]
        beaten = all(r["verdict"] == "beats" for r in mine)
        measures = sorted({r["measure"] for r in mine}, key=[PHONE, PER].index)
        on = " and ".join(f"`{m}`" for m in measures)
        lines += ["", f"- `{enc}`: " + (f"beats every floor on {on}." if beaten else
                                        "does not beat " + ", ".join(
                                            f"`{r['floor']}` on `{r['measure']}` ({r['verdict']})"
                                            for r in mine if r["verdict"] != "beats") + ".")]
    return lines + [""]
