"""``report.md`` and PNG plots of a results table; every sentence is computed from the numbers.

The report answers the paper's question (Liu, Yeh & Glass, ICASSP 2024): does a label-free MI
measure rank layers and models as the supervised measures (probe MI, probe accuracy) and the
linear-CTC phone error rate do? For each label-free measure x supervised measure it gives
Spearman, Kendall tau-b and Pearson correlations with bootstrap CIs (points resampled, each
point's value redrawn within its own CI) and permutation p-values, at three levels: within each
encoder across its layers, pooled over all (encoder, layer) points, and across encoders (each
encoder's best layer). The verdict of a comparison uses Spearman:

* **agrees** - the correlation has the expected sign, its CI excludes 0 and the permutation
  p <= 1 - ci_level (expected sign: + when both measures are "higher is better", - against
  an error rate);
* **disagrees** - the opposite sign, under the same two conditions;
* **inconclusive** - otherwise (often: too few points; with 4 encoders the exact p cannot go
  below 2/24).

Propagating each point's own CI attenuates the resampled coefficients, so the interval of a
perfect ranking (ρ = 1) can end below 1: it is deliberately conservative.

When the results hold checkpoints of the shipped SSL zoo, the report opens with what such a run
can decide: whether each model beats its own initialisation, log-mel and log-mel with context
(:mod:`speechmi_jax.analysis.floor`); then the model-selection verdict and the APC vs MLM table
(:mod:`speechmi_jax.analysis.selection`) when there are enough zoo points for a verdict (else
that section follows the conclusions).

A "Saturation" section lists every label-free record above ``results.SATURATION`` (90 %) of
its ceiling, and the tables mark them ⚠: such a figure is set by log2 K or H(codes), not by
the layer.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

from speechmi_jax.analysis import correlation as corr
from speechmi_jax.analysis.formatting import fmt, fmt_ci, fmt_corr
from speechmi_jax.analysis import floor, plots
from speechmi_jax.analysis import selection
from speechmi_jax.analysis.results import MEASURES, SATURATION, Results, as_results, ceiling_fraction

_PRIMARY = "spearman"


@dataclasses.dataclass
class Comparison:
    """One label-free vs supervised comparison at one level."""

    label_free: str
    reference: str
    level: str                      # "within", "pooled", "across"
    encoder: Optional[str]          # for "within"
    coefs: dict                     # method -> Correlation
    expected_sign: int

    @property
    def primary(self) -> corr.Correlation:
        return self.coefs[_PRIMARY]

    @property
    def verdict(self) -> str:
        return corr.verdict(self.primary, self.expected_sign)

    def where(self) -> str:
        return {"within": f"across the layers of {self.encoder}",
                "pooled": "pooled over all (encoder, layer) points",
                "across": "across encoders (best layer of each)"}[self.level]


def _kinds(res: Results) -> tuple[list[str], list[str]]:
    """(label-free measures, supervised measures) present in the results."""
    ms = res.measures()
    return ([m for m in ms if MEASURES[m].kind == "label_free"],
            [m for m in ms if MEASURES[m].kind == "supervised"])


def compare(res: Results, label_free: str, reference: str, *, num_bootstrap: int = 2000,
            num_permutations: int = 10000, seed: int = 0) -> list[Comparison]:
    """All levels of one label-free vs reference comparison (levels without 3 points skipped)."""
    kw = dict(num_bootstrap=num_bootstrap, num_permutations=num_permutations, seed=seed)
    sign = corr.expected_sign(label_free, reference)
    out = []
    within = {m: corr.within_encoder(res, label_free, reference, m, **kw) for m in corr.METHODS}
    for enc in within[_PRIMARY]:
        out.append(Comparison(label_free, reference, "within", enc,
                              {m: within[m][enc] for m in corr.METHODS}, sign))
    for level, fn in (("pooled", corr.pooled), ("across", corr.across_encoders)):
        coefs = {m: fn(res, label_free, reference, m, **kw) for m in corr.METHODS}
        if coefs[_PRIMARY] is not None:
            out.append(Comparison(label_free, reference, level, None, coefs, sign))
    return out


# ----------------------------------------------------------------------------------------------
# Sections.

def _metadata_section(res: Results) -> list[str]:
    lines = ["## Run", ""]
    meta = res.metadata
    if not meta:
        return lines + ["(no run metadata recorded)", ""]
    for key, value in meta.items():
        if key == "skipped":
            continue  # its own section
        text = value if isinstance(value, (str, int, float)) else json.dumps(value, sort_keys=True)
        if len(str(text)) > 300:
            text = str(text)[:300] + " …"
        lines.append(f"- **{key}**: {text}")
    return lines + [""]


def _skipped_section(res: Results, show: int = 20) -> list[str]:
    """Utterances the corpus left out (``metadata.skipped``: [{id, reason}]), each with why."""
    skipped = res.metadata.get("skipped") or []
    if not skipped:
        return []
    lines = ["## Skipped utterances", "",
             f"{len(skipped)} utterance(s) were left out by `on_error=\"skip\"` "
             f"(all of them in `results.json`, `metadata.skipped`):", ""]
    lines += [f"- `{s['id']}`: {s['reason']}" for s in skipped[:show]]
    if len(skipped) > show:
        lines.append(f"- ... and {len(skipped) - show} more")
    return lines + [""]


def _runner_up_note(res: Results, enc: str, measure: str, best) -> str:
    others = [r for r in res.series(enc, measure) if r.layer != best.layer]
    if not others:
        return ""
    ties = [r.layer for r in others if r.ci[1] >= best.ci[0] and r.ci[0] <= best.ci[1]]
    if ties:
        return f"; CI overlaps layer{'s' if len(ties) > 1 else ''} {', '.join(map(str, ties))}"
    return "; CI clear of every other layer"


def _best_layer_section(res: Results) -> list[str]:
    lines = ["## Best layer per measure", "",
             "Best = highest value (lowest for error rates and other lower-is-better measures; "
             "for a measure with a target, the value nearest it); CIs that overlap another "
             "layer's mean the ranking of those layers is not settled by this run.", ""]
    for measure in res.measures():
        lines.append(f"- `{measure}`:")
        for enc in res.encoders():
            best = corr.best_layer(res, enc, measure)
            if best is None:
                continue
            n = len(res.series(enc, measure))
            if n == 1:
                lines.append(f"  - {enc} (single layer): {fmt_ci(best)} {best.unit}")
            else:
                lines.append(f"  - {enc}: layer {best.layer} of 0–{max(res.layers(enc, measure))},"
                             f" {fmt_ci(best)} {best.unit}"
                             f"{_runner_up_note(res, enc, measure, best)}")
    return lines + [""]


def _agreement_section(comparisons: list[Comparison], res: Results) -> list[str]:
    lines = ["## Does the label-free measure rank layers and models like the supervised ones?", "",
             f"Correlation (value [{100 * res.ci_level:.0f}% bootstrap CI] permutation p). "
             "The CI resamples the points and redraws each point within its own CI (which "
             "attenuates the coefficient: conservative); p is exact (all permutations) for up "
             "to 7 points. Verdict from Spearman ρ: agrees / disagrees when its sign is the "
             "expected one / the opposite (+ for two higher-is-better measures, − against an "
             f"error rate), its CI excludes 0 and p <= {1 - res.ci_level:.2g}; else "
             "inconclusive.", ""]
    by_pair: dict = {}
    for c in comparisons:
        by_pair.setdefault((c.label_free, c.reference), []).append(c)
    for (lf, ref), comps in by_pair.items():
        sign = "+" if comps[0].expected_sign > 0 else "−"
        lines += [f"### `{lf}` vs `{ref}` (expected sign {sign})", "",
                  "| level | n | Spearman ρ | Kendall τ_b | Pearson r | verdict |",
                  "|---|---|---|---|---|---|"]
        for c in comps:
            level = f"within {c.encoder}" if c.level == "within" else c.where()
            lines.append(f"| {level} | {c.primary.n} | {fmt_corr(c.coefs['spearman'])} | "
                         f"{fmt_corr(c.coefs['kendall'])} | {fmt_corr(c.coefs['pearson'])} | "
                         f"{c.verdict} |")
        lines.append("")
    return lines


def _best_layer_agreement(res: Results, lf: str, ref: str) -> list[tuple[str, bool]]:
    """Per encoder with >= 2 common layers: does ``lf``'s best layer serve ``ref`` as well?"""
    out = []
    for enc in res.encoders():
        common = [l for l in res.layers(enc, lf) if res.get(enc, l, ref) is not None]
        if len(common) < 2:
            continue
        b_lf, b_ref = corr.best_layer(res, enc, lf), corr.best_layer(res, enc, ref)
        picked = res.get(enc, b_lf.layer, ref)
        same = b_lf.layer == b_ref.layer
        within = b_ref.ci[0] <= picked.value <= b_ref.ci[1]
        if same:
            text = (f"in {enc}, `{lf}` and `{ref}` peak at the same layer ({b_lf.layer}).")
        else:
            text = (f"in {enc}, `{lf}` peaks at layer {b_lf.layer} but `{ref}` at layer "
                    f"{b_ref.layer}; choosing layer {b_lf.layer} by `{lf}` gives `{ref}` = "
                    f"{fmt_ci(picked)} vs the best {fmt_ci(b_ref)} {b_ref.unit} "
                    f"({'inside' if within else 'outside'} the best layer's CI).")
        out.append((text, same or within))
    return out


def _conclusions_section(comparisons: list[Comparison], res: Results) -> list[str]:
    lines = ["## What holds and what does not", ""]
    lfs, refs = _kinds(res)
    if not lfs or not refs:
        missing = "label-free" if not lfs else "supervised"
        return lines + [f"No {missing} measure in these results: the claim cannot be checked.", ""]
    lines += ["Claim checked: a label-free MI measure ranks layers and models as the supervised "
              f"measures ({', '.join(f'`{r}`' for r in refs)}) do.", ""]
    groups = {"agrees": [], "disagrees": [], "inconclusive": []}
    for c in comparisons:
        groups[c.verdict].append(f"`{c.label_free}` vs `{c.reference}` {c.where()}: "
                                 f"ρ = {fmt_corr(c.primary)}, n = {c.primary.n}.")
    best_holds, best_fails = [], []
    for lf in lfs:
        for ref in refs:
            for text, ok in _best_layer_agreement(res, lf, ref):
                (best_holds if ok else best_fails).append(text[0].upper() + text[1:])
    n = len(comparisons)
    lines.append(f"Of {n} rank comparisons (Spearman), {len(groups['agrees'])} agree, "
                 f"{len(groups['disagrees'])} disagree and {len(groups['inconclusive'])} are "
                 f"inconclusive.")
    lines.append("")
    alpha = f"{1 - res.ci_level:.2g}"
    for title, items in (
            (f"Holds (expected sign, CI excludes 0, p <= {alpha})", groups["agrees"]),
            (f"Does not hold (opposite sign, CI excludes 0, p <= {alpha})", groups["disagrees"]),
            (f"Not established (CI includes 0 or p > {alpha})", groups["inconclusive"]),
                         ("Best layer chosen by the label-free measure is as good as the best "
                          "(same layer, or within its CI)", best_holds),
                         ("Best layer chosen by the label-free measure falls short", best_fails)):
        lines.append(f"**{title}:**" + (" none." if not items else ""))
        lines += [f"- {t}" for t in items]
        lines.append("")
    return lines


def _saturation_section(res: Results) -> list[str]:
    """Label-free records above SATURATION of their ceiling (log2 K, H(codes)): there the cap,
    not the layer, sets the figure, and layer differences shrink into it."""
    lines = ["## Saturation", "",
             f"A label-free bound above {100 * SATURATION:.0f} % of its ceiling "
             "(`extra.ceiling_fraction`) is saturated: the ceiling, not the layer, sets it, so "
             "it cannot rank layers.", ""]
    rows = [(r, f) for r in res.records if (f := ceiling_fraction(r)) is not None]
    if not rows:
        return []
    flagged = [(r, f) for r, f in rows if f > SATURATION]
    if not flagged:
        worst = max(rows, key=lambda rf: rf[1])
        return lines + [f"None of the {len(rows)} label-free records is saturated (highest: "
                        f"`{worst[0].measure}`, {worst[0].encoder} layer {worst[0].layer}, "
                        f"{100 * worst[1]:.0f} %).", ""]
    lines += [f"**{len(flagged)} of {len(rows)} label-free records are saturated** (marked ⚠ in "
              "the tables):", "", "| measure | encoder | layer | value | ceiling | fraction |",
              "|---|---|---|---|---|---|"]
    for r, f in flagged:
        lines.append(f"| `{r.measure}` | {r.encoder} | {r.layer} | {fmt(r.value, r.unit)} | "
                     f"{fmt(r.extra['ceiling'], r.unit)} | {100 * f:.0f} % |")
    return lines + [""]


def _tables_section(res: Results) -> list[str]:
    lines = ["## Tables", "",
             f"Value [{100 * res.ci_level:.0f}% CI] per encoder (columns) and layer (rows); "
             "**bold** = the encoder's best layer.", ""]
    encoders = res.encoders()
    for measure in res.measures():
        d = MEASURES[measure]
        cols = [e for e in encoders if res.series(e, measure)]
        layers = sorted({l for e in cols for l in res.layers(e, measure)})
        lines += [f"### `{measure}` ({d.unit})", "", "| layer | " + " | ".join(cols) + " |",
                  "|---|" + "---|" * len(cols)]
        best = {e: corr.best_layer(res, e, measure).layer for e in cols}
        for l in layers:
            cells = []
            for e in cols:
                r = res.get(e, l, measure)
                cell = "" if r is None else fmt_ci(r)
                if r is not None and (ceiling_fraction(r) or 0.0) > SATURATION:
                    cell += " ⚠"
                cells.append(f"**{cell}**" if r is not None and best[e] == l
                             and len(res.series(e, measure)) > 1 else cell)
            lines.append(f"| {l} | " + " | ".join(cells) + " |")
        ceilings = {e: r.extra["ceiling"] for e in cols for r in res.series(e, measure)[:1]
                    if isinstance(r.extra.get("ceiling"), (int, float))}
        if ceilings:
            lines += ["", "Ceiling (`extra.ceiling`): " + ", ".join(
                f"{e} {fmt(v, d.unit)} {d.unit}" for e, v in ceilings.items()) + "."]
        lines.append("")
    return lines


# ----------------------------------------------------------------------------------------------

def write_report(results, out_dir: str | Path, *, num_bootstrap: int = 2000,
                 num_permutations: int = 10000, seed: int = 0) -> Path:
    """Writes ``report.md``, ``layers.png`` and ``scatter_<label-free measure>.png`` -> report path.

    ``results``: a :class:`~speechmi_jax.analysis.results.Results` or a list of records.
    """
    res = as_results(results)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lfs, refs = _kinds(res)
    comparisons = comparisons_for(res, num_bootstrap=num_bootstrap,
                                  num_permutations=num_permutations, seed=seed)

    figures = []
    if res.records:
        figures.append(("Per-layer measures", plots.plot_layer_curves(res, out / "layers.png")))
    for lf in lfs:
        ys = [r for r in refs if corr.common_points(res, lf, r)]
        if ys:
            titles = {c.reference: f"pooled ρ = {fmt_corr(c.primary)}"
                      for c in comparisons if c.label_free == lf and c.level == "pooled"}
            figures.append((f"`{lf}` vs supervised measures",
                            plots.plot_scatter(res, lf, ys, out / f"scatter_{lf}.png", titles)))

    lines = ["# speechmi_jax report", "",
             f"{len(res.records)} records: {len(res.encoders())} encoders "
             f"({', '.join(res.encoders())}), measures {', '.join(res.measures())}.", ""]
    # Lead with what the run can decide: the SSL models against their floors, then model
    # selection when there are enough zoo points for a verdict (else after the conclusions).
    lines += floor.section(res)
    sel = selection.section(res, num_bootstrap=num_bootstrap, num_permutations=num_permutations,
                            seed=seed)
    decidable = selection.can_decide(res)
    lines += sel if decidable else []
    lines += _metadata_section(res)
    lines += _skipped_section(res)
    lines += _conclusions_section(comparisons, res)
    lines += [] if decidable else sel
    lines += _saturation_section(res)
    lines += _best_layer_section(res)
    if comparisons:
        lines += _agreement_section(comparisons, res)
    lines += _tables_section(res)
    if figures:
        lines += ["## Plots", ""]
        for title, path in figures:
            lines += [f"{title}:", "", f"![{path.stem}]({path.name})", ""]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def comparisons_for(results, label_free: Sequence[str] = (), references: Sequence[str] = (),
                    **kwargs) -> list[Comparison]:
    """All comparisons the report makes (or those of the given measures), for programmatic use."""
    res = as_results(results)
    lfs, refs = _kinds(res)
    lfs, refs = list(label_free) or lfs, list(references) or refs
    return [c for lf in lfs for ref in refs for c in compare(res, lf, ref, **kwargs)]
