"""Label-free model selection over the SSL zoo, and the APC vs MLM table, from a results table.

The paper's practical claim (Liu, Yeh & Glass, ICASSP 2024): a label-free MI measure picks
layers and models the way recognition does, so SSL models can be designed and selected without
labels. Over the shipped zoo (:mod:`speechmi_jax.zoo`: each model's checkpoints along training,
``<name>@step<N>``, step 0 being the run's initialisation) this module answers, for every
label-free measure in the results:

(a) **Layers.** Within each (model, checkpoint) point, does the label-free measure's best layer
    fall within ``tolerance`` (1) of the layer with the lowest linear-CTC PER? With 4 layers a
    layer drawn at random often does, so the figure comes with the rate chance reaches (each
    point: the share of its layers within the tolerance of the best-PER layer) and the exact
    probability of doing at least as well by chance (Poisson-binomial tail).
(b) **Models.** Across the points, each at the layer the label-free measure picks: Kendall tau_b
    and Spearman rho of the label-free value against the PER and against phone MI at that layer
    (bootstrap CI, each point redrawn within its own CI; permutation p), with the report's
    verdict rule (:func:`correlation.verdict`: expected sign, CI excludes 0, p <= 1 - level)
    applied to Kendall's tau_b.
(c) **The SSL objective's own bound** as a label-free predictor: the dev bound logged at that
    checkpoint during pretraining (``card.json`` ``checkpoint_dev``) against each point's best
    PER and best phone MI (over its layers: the bound has no layer), within each model across
    its checkpoints and pooled. The bounds of different
    objectives bound different targets (APC's and data2vec's continuous-target entropies are
    Gaussian estimates, HuBERT's are <= log2 K), so only the within-model ranking is a clean
    test; the pooled one is shown for completeness.
(d) **APC vs MLM**: the SSL-as-MI-bound table (``ssl/table1.py``) filled with this run's numbers.

Checkpoints with identical weights (two runs with one seed and architecture share their step 0)
are one point: the first encoder name in the results stands for them. The zoo's cards are read
from the installed package, so the results must come from the same zoo.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional

import numpy as np

from speechmi_jax import zoo
from speechmi_jax.analysis import correlation as corr
from speechmi_jax.analysis.formatting import fmt_ci, fmt_corr
from speechmi_jax.analysis.results import MEASURES, Results, as_results, compared, direction
from speechmi_jax.ssl import table1

PER = "ctc_per"
PHONE = "phone_mi"
REFERENCES = (PER, PHONE)
METHODS = ("kendall", "spearman")


@dataclasses.dataclass(frozen=True)
class Point:
    """One (model, checkpoint) of the zoo as it appears in the results."""

    model: str
    step: int
    encoder: str          # the results' encoder name

    @property
    def label(self) -> str:
        return f"{self.model}@step{self.step}"


def zoo_points(results) -> list[Point]:
    """The zoo checkpoints among the results' encoders, one per distinct weights file."""
    res = as_results(results)
    out = [Point(*zoo.parse(enc), enc)
           for enc in zoo.distinct(e for e in res.encoders() if zoo.is_zoo_name(e))]
    return sorted(out, key=lambda p: (p.model, p.step))


# ----------------------------------------------------------------------------------------------
# (a) best layer

@dataclasses.dataclass(frozen=True)
class LayerPick:
    point: Point
    label_free_layer: int
    reference_layer: int
    within: bool          # |label_free_layer - reference_layer| <= tolerance
    chance: float         # share of the point's layers within tolerance of reference_layer


def layer_agreement(res: Results, points, measure: str, reference: str = PER,
                    tolerance: int = 1) -> list[LayerPick]:
    out = []
    for p in points:
        b_lf, b_ref = corr.best_layer(res, p.encoder, measure), corr.best_layer(res, p.encoder, reference)
        if b_lf is None or b_ref is None:
            continue
        layers = res.layers(p.encoder, reference)
        near = sum(abs(l - b_ref.layer) <= tolerance for l in layers)
        out.append(LayerPick(p, b_lf.layer, b_ref.layer, abs(b_lf.layer - b_ref.layer) <= tolerance,
                             near / len(layers)))
    return out


def chance_tail(chances, hits: int) -> float:
    """P(at least ``hits`` successes) for independent trials with success probabilities
    ``chances`` (Poisson-binomial, exact by convolution)."""
    dist = np.array([1.0])
    for q in chances:
        dist = np.convolve(dist, [1.0 - q, q])
    return float(dist[hits:].sum())


# ----------------------------------------------------------------------------------------------
# (b) models, each at its label-free layer; (c) the SSL bound

@dataclasses.dataclass
class Selection:
    """``measure`` (label-free, or ``"ssl_bound"``) against ``reference`` across points."""

    measure: str
    reference: str
    scope: str                          # "pooled" or a model name
    rows: list                          # (Point, layer, x value, reference record)
    coefs: dict                         # method -> Correlation
    sign: int                           # the expected sign

    @property
    def verdict(self) -> str:
        return corr.verdict(self.coefs[METHODS[0]], self.sign)


def picked(res: Results, points, measure: str, reference: str) -> list[tuple]:
    """(point, layer, label-free record, reference record) at the label-free measure's best layer."""
    out = []
    for p in points:
        b = corr.best_layer(res, p.encoder, measure)
        r = None if b is None else res.get(p.encoder, b.layer, reference)
        if r is not None:
            out.append((p, b.layer, b, r))
    return out


def _correlate(xs, ys, x_ci, y_ci, res, kw) -> dict:
    return {m: corr.correlate(xs, ys, m, x_ci=x_ci, y_ci=y_ci, ci_level=res.ci_level, **kw)
            for m in METHODS}


def selection(res: Results, points, measure: str, reference: str, **kw) -> Optional[Selection]:
    """(b): ``measure`` at its own best layer vs ``reference`` at that layer (None under 3 points)."""
    rows = picked(res, points, measure, reference)
    if len(rows) < 3:
        return None
    xs, ys = [compared(r[2]) for r in rows], [compared(r[3]) for r in rows]
    coefs = _correlate([x[0] for x in xs], [y[0] for y in ys], [x[1] for x in xs],
                       [y[1] for y in ys], res, kw)
    return Selection(measure, reference, "pooled", [(p, l, a.value, b) for p, l, a, b in rows],
                     coefs, corr.expected_sign(measure, reference))


def ssl_bound(point: Point) -> float:
    """The objective's dev bound (bits) logged at this checkpoint during pretraining."""
    c = zoo.card(point.model)
    if "checkpoint_dev" not in c:
        raise KeyError(f"zoo card of {point.model!r} has no checkpoint_dev (ship it with "
                       "python -m speechmi_jax.zoo.ship)")
    return float(c["checkpoint_dev"][str(point.step)]["bound_bits"])


def ssl_bound_selections(res: Results, points, reference: str, **kw) -> list[Selection]:
    """(c): the logged SSL bound vs ``reference`` at the point's best layer for ``reference``
    (the model's best achievable figure), pooled and per model."""
    rows = [(p, b.layer, b) for p in points if (b := corr.best_layer(res, p.encoder, reference))]
    sign = 1 if MEASURES[reference].higher_is_better else -1
    out = []
    scopes = [("pooled", rows)] + [(m, [r for r in rows if r[0].model == m])
                                   for m in dict.fromkeys(r[0].model for r in rows)]
    for scope, rs in scopes:
        if len(rs) < 3:
            continue
        xs = [ssl_bound(r[0]) for r in rs]
        coefs = _correlate(xs, [r[2].value for r in rs], None, [r[2].ci for r in rs], res, kw)
        out.append(Selection("ssl_bound", reference, scope,
                             [(p, l, x, b) for (p, l, b), x in zip(rs, xs)], coefs, sign))
    return out


# ----------------------------------------------------------------------------------------------
# (d) APC vs MLM

def _table1_columns(card: dict) -> tuple[str, str, str]:
    """(views, Z_target, p_psi) of a zoo model, in the words of the SSL objectives' table
    (``ssl/table1.py``)."""
    cfg, obj = card["config"], card["objective"]
    if obj in ("apc", "vqapc"):
        n = cfg["population"]["shift"][0]
        via = f" through a {cfg['model']['vq_codes']}-code VQ" if obj == "vqapc" else ""
        stack = cfg["model"].get("logmel", {}).get("stack", 1)
        frame = f"{stack} stacked log-mel frames" if stack > 1 else "log-mel frame"
        return (f"frames ≤ t{via} → frame t+{n}", frame, "Gaussian on the residual")
    if obj == "hubert":
        src = card.get("targets_source") or cfg["targets"]["source"]
        return ("unmasked frames → masked frame", f"k-means id (K = {cfg['targets']['k']}) of {src}",
                "softmax over K codes")
    if obj == "data2vec":
        return ("masked student → EMA teacher",
                f"mean of the teacher's top-{cfg['data2vec']['top_k']} layers",
                "diagonal Gaussian on the residual")
    return ("?", "?", "?")


def table1_rows(res: Results, points, label_free=()) -> list[dict]:
    """One row per zoo model at its latest checkpoint in the results."""
    final = {}
    for p in points:
        if p.model not in final or p.step > final[p.model].step:
            final[p.model] = p
    rows = []
    for model, p in final.items():
        c = zoo.card(model)
        views, target, p_psi = _table1_columns(c)
        dev = c["checkpoint_dev"][str(p.step)] if "checkpoint_dev" in c else c["final_dev"]
        rows.append(dict(
            model=model, step=p.step, family=table1.objective(c["objective"]).family,
            views=views, target=target, p_psi=p_psi, h_target=dev["h_target_bits"],
            bound=dev["bound_bits"], phone=corr.best_layer(res, p.encoder, PHONE),
            per=corr.best_layer(res, p.encoder, PER),
            label_free=[corr.best_layer(res, p.encoder, m) for m in label_free]))
    return rows


# ----------------------------------------------------------------------------------------------
# The summary: every label-free measure in one sortable table, as plain data (JSON)

def _corr_data(c) -> Optional[dict]:
    if c is None:
        return None
    return {"r": _num(c.r), "ci": [_num(c.ci[0]), _num(c.ci[1])], "p": _num(c.p_value), "n": c.n}


def _num(x) -> Optional[float]:
    return None if x is None or x != x else round(float(x), 6)


def spread(res: Results, points, measure: str) -> Optional[dict]:
    """How far apart the points are on ``measure`` (each at its best layer for it), against
    the typical width of one point's CI: a study over points closer than their CIs cannot rank."""
    recs = [b for p in points if (b := corr.best_layer(res, p.encoder, measure)) is not None]
    if not recs:
        return None
    values, widths = [r.value for r in recs], [r.ci[1] - r.ci[0] for r in recs]
    width = float(np.median(widths))
    return {"n": len(recs), "min": _num(min(values)), "max": _num(max(values)),
            "spread": _num(max(values) - min(values)), "median_ci_width": _num(width),
            "spread_over_ci_width": _num((max(values) - min(values)) / width) if width > 0 else None}


def measure_summary(res: Results, points, measure: str, tolerance: int = 1, **kw) -> dict:
    """(a) and (b) for one label-free measure, as plain data."""
    picks = layer_agreement(res, points, measure, PER, tolerance)
    hits = sum(p.within for p in picks)
    out = {"measure": measure, "direction": direction(measure),
           "layers": {"n": len(picks), "within": hits,
                      "same": sum(p.label_free_layer == p.reference_layer for p in picks),
                      "chance_mean": _num(sum(p.chance for p in picks)),
                      "p_chance": _num(chance_tail([p.chance for p in picks], hits)) if picks else None}}
    for ref in REFERENCES:
        sel = selection(res, points, measure, ref, **kw)
        out[f"vs_{ref}"] = None if sel is None else {
            "kendall": _corr_data(sel.coefs["kendall"]), "spearman": _corr_data(sel.coefs["spearman"]),
            "expected_sign": sel.sign, "verdict": sel.verdict}
    return out


def ssl_bound_summary(res: Results, points, **kw) -> dict:
    """(c) as plain data: per reference, the within-model verdicts and the pooled one."""
    out = {"measure": "ssl_bound", "direction": "higher is better"}
    for ref in REFERENCES:
        sels = ssl_bound_selections(res, points, ref, **kw)
        within = [s for s in sels if s.scope != "pooled"]
        pooled = next((s for s in sels if s.scope == "pooled"), None)
        out[f"vs_{ref}"] = None if pooled is None else {
            "kendall": _corr_data(pooled.coefs["kendall"]),
            "spearman": _corr_data(pooled.coefs["spearman"]), "expected_sign": pooled.sign,
            "verdict": pooled.verdict,
            "within_models": {"n": len(within), "agree": sum(s.verdict == "agrees" for s in within),
                              "kendall": {s.scope: _corr_data(s.coefs["kendall"]) for s in within}}}
    return out


def _size(card: dict) -> str:
    arch = card["config"]["model"].get("logmel") or card["config"]["model"]
    return f"{arch.get('num_layers', '?')}x{arch.get('hidden_size', '?')}"


def equal_compute(res: Results, points) -> list[dict]:
    """(d) at equal compute: per (size, step), each family's best PER and best phone MI (means
    over its seeds; the recipes of one size train the same steps on the same batches, with the
    same parameter count, so a step costs about the same)."""
    cells = {}
    for p in points:
        c = zoo.card(p.model)
        fam = table1.objective(c["objective"]).family
        per, phone = corr.best_layer(res, p.encoder, PER), corr.best_layer(res, p.encoder, PHONE)
        if per is not None and phone is not None:
            cells.setdefault((_size(c), p.step), {}).setdefault(fam, []).append((per.value, phone.value))
    rows = []
    for (size, step), fams in sorted(cells.items()):
        if len(fams) < 2:
            continue
        row = {"size": size, "step": step}
        for fam, vals in sorted(fams.items()):
            row[fam] = {"seeds": len(vals), "per": _num(np.mean([v[0] for v in vals])),
                        "phone_mi": _num(np.mean([v[1] for v in vals]))}
        rows.append(row)
    return rows


def summary(results, *, tolerance: int = 1, num_bootstrap: int = 2000,
            num_permutations: int = 10000, seed: int = 0) -> dict:
    """The selection study as plain data: the points, their spread, every label-free measure's
    (a) and (b), the SSL bound's (c), and (d) at equal compute."""
    res = as_results(results)
    points = zoo_points(res)
    kw = dict(num_bootstrap=num_bootstrap, num_permutations=num_permutations, seed=seed)
    return {"points": [p.label for p in points],
            "models": list(dict.fromkeys(p.model for p in points)),
            "spread": {ref: spread(res, points, ref) for ref in REFERENCES},
            "measures": [measure_summary(res, points, m, tolerance, **kw) for m in _label_free(res)]
                        + ([ssl_bound_summary(res, points, **kw)] if points else []),
            "equal_compute": equal_compute(res, points) if points else []}


def _score(m: dict) -> float:
    """Sort key: the Kendall tau vs PER with the expected sign made positive (-inf when absent)."""
    v = m.get(f"vs_{PER}")
    return -math.inf if not v or v["kendall"]["r"] is None else v["expected_sign"] * v["kendall"]["r"]


def _fmt_corr_data(c: Optional[dict]) -> str:
    if c is None or c["r"] is None:
        return "–"
    ci = "[CI n/a]" if c["ci"][0] is None else f"[{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]"
    return f"{c['r']:+.2f} {ci}, p = {c['p']:.3g}"


def summary_table(s: dict) -> list[str]:
    """Markdown: one row per label-free measure, the best selector first (Kendall tau vs PER,
    sign-adjusted): (a) layer picks vs chance, (b) tau vs PER and vs phone MI with verdicts."""
    rows = ["| measure | selects by | (a) best layer within ±1 of best-PER layer | "
            "(b) Kendall τ vs PER | verdict | (b) Kendall τ vs phone MI | verdict |",
            "|---|---|---|---|---|---|---|"]
    for m in sorted(s["measures"], key=_score, reverse=True):
        lay = m.get("layers")
        a = (f"{lay['within']}/{lay['n']} (chance {lay['chance_mean']:.1f}, p = {lay['p_chance']:.3g})"
             if lay and lay["n"] else "– (no layers)")
        cells = []
        for ref in REFERENCES:
            v = m.get(f"vs_{ref}")
            extra = ""
            if v and "within_models" in v:
                w = v["within_models"]
                extra = f" (within models: {w['agree']}/{w['n']} agree)"
            cells += [_fmt_corr_data(v and v["kendall"]), (v["verdict"] if v else "–") + extra]
        rows.append(f"| `{m['measure']}` | {m['direction']} | {a} | " + " | ".join(cells) + " |")
    return rows


# ----------------------------------------------------------------------------------------------
# The report section

def _fmt_rec(r) -> str:
    return "–" if r is None else f"{fmt_ci(r)} (layer {r.layer})"


def _label_free(res: Results) -> list[str]:
    return [m for m in res.measures() if MEASURES[m].kind == "label_free"]


def family_summary(rows: list[dict]) -> list[str]:
    """Sentences comparing the APC and MLM families from table rows (best PER, best phone MI)."""
    out = []
    for key, name, better in (("per", "linear-CTC PER", min), ("phone", "phone MI", max)):
        fams = {}
        for r in rows:
            if r[key] is not None:
                fams.setdefault(r["family"], []).append(r)
        if len(fams) < 2:
            continue
        best = {f: better(rs, key=lambda r: r[key].value) for f, rs in fams.items()}
        ranked = sorted(best.items(), key=lambda fr: fr[1][key].value, reverse=better is max)
        (f1, r1), (f2, r2) = ranked[0], ranked[1]
        sep = r1[key].ci[1] < r2[key].ci[0] if better is min else r1[key].ci[0] > r2[key].ci[1]
        out.append(f"Best {name}: {f1} ({r1['model']}, {_fmt_rec(r1[key])}) beats {f2} "
                   f"({r2['model']}, {_fmt_rec(r2[key])}); the CIs "
                   f"{'do not overlap' if sep else 'overlap, so the order is not settled'}.")
    return out


def can_decide(results, alpha: float = 0.05) -> bool:
    """Whether the zoo points present allow a rank verdict at all: with n points the smallest
    two-sided permutation p is 2 / n!, above ``alpha`` for n <= 4."""
    n = len(zoo_points(results))
    return n >= 3 and 2.0 / math.factorial(n) <= alpha


def _layer_pick_lines(res, points, lf: str, tolerance: int) -> tuple[list[str], list[str]]:
    """(a): (verdict lines, detail lines) of ``lf``'s best layer vs the best-PER layer."""
    picks = layer_agreement(res, points, lf, PER, tolerance)
    if not picks:
        return [], []
    hits = sum(p.within for p in picks)
    chance = sum(p.chance for p in picks)
    p_chance = chance_tail([p.chance for p in picks], hits)
    same = sum(p.label_free_layer == p.reference_layer for p in picks)
    verdict = [
        f"- (a) `{lf}`'s best layer is within ±{tolerance} of the best-PER layer at "
        f"{hits} of {len(picks)} points ({same} the same layer); a random layer would be "
        f"at {chance:.1f} of {len(picks)} on average (P(≥ {hits} by chance) = "
        f"{p_chance:.3f})."]
    detail = [f"### (a) `{lf}`: best layer vs best-PER layer", "",
              "| point | label-free layer | best-PER layer | within ±1 |", "|---|---|---|---|"]
    detail += [f"| {p.point.label} | {p.label_free_layer} | {p.reference_layer} | "
               f"{'yes' if p.within else 'no'} |" for p in picks]
    detail.append("")
    return verdict, detail


def _rank_lines(res, points, lf: str, kw) -> tuple[list[str], list[str], int]:
    """(b): (verdict lines, detail lines, the number of points when too few for a verdict, else
    0) of ``lf`` at its own best layer vs each reference."""
    verdict, detail, few_points = [], [], 0
    sels = [s for ref in REFERENCES if (s := selection(res, points, lf, ref, **kw))]
    for s in sels:
        k, r = s.coefs["kendall"], s.coefs["spearman"]
        verdict.append(
            f"- (b) `{lf}` vs `{s.reference}` across {k.n} points: Kendall τ = {fmt_corr(k)}; "
            f"Spearman ρ = {fmt_corr(r)}: **{s.verdict}** (expected sign "
            f"{'+' if s.sign > 0 else '−'}).")
    if sels and 2.0 / math.factorial(len(sels[0].rows)) > 1.0 - res.ci_level:
        few_points = len(sels[0].rows)
    if sels:
        detail += [f"### (b) `{lf}` at its own best layer, per point", "",
                   f"| point | layer | `{lf}` | " + " | ".join(f"`{s.reference}`" for s in sels)
                   + " |", "|---|---|---|" + "---|" * len(sels)]
        for i, (p, layer, x, _) in enumerate(sels[0].rows):
            detail.append(f"| {p.label} | {layer} | {x:.3f} | "
                          + " | ".join(_fmt_rec(s.rows[i][3]) for s in sels) + " |")
        detail.append("")
    return verdict, detail, few_points


def _bound_lines(res, points, ref: str, kw) -> tuple[list[str], list[str]]:
    """(c): (verdict lines, detail lines) of the SSL objective's dev bound vs ``ref``."""
    bound = ssl_bound_selections(res, points, ref, **kw)
    if not bound:
        return [], []
    within = [s for s in bound if s.scope != "pooled"]
    agree = [s.scope for s in within if s.verdict == "agrees"]
    pooled = next((s for s in bound if s.scope == "pooled"), None)
    text = (f"- (c) The SSL objective's logged dev bound vs `{ref}` (each point's best "
            "layer for it): " + (
                f"within a model across its checkpoints it agrees in {len(agree)} of "
                f"{len(within)} models" + (f" ({', '.join(agree)})" if agree else "")
                if within else "no model has 3 checkpoints here"))
    if pooled is not None:
        text += (f"; pooled over all {pooled.coefs['kendall'].n} points Kendall τ = "
                 f"{fmt_corr(pooled.coefs['kendall'])}: {pooled.verdict} (bounds of "
                 "different objectives are not on one scale)")
    detail = [f"### (c) SSL dev bound vs `{ref}`", "",
              "| scope | n | Kendall τ | Spearman ρ | verdict |", "|---|---|---|---|---|"]
    detail += [f"| {s.scope} | {s.coefs['kendall'].n} | {fmt_corr(s.coefs['kendall'])} | "
               f"{fmt_corr(s.coefs['spearman'])} | {s.verdict} |" for s in bound]
    detail.append("")
    return [text + "."], detail


def _table1_lines(rows, lfs) -> list[str]:
    """(d): the SSL-as-MI-bound table filled with this run's numbers."""
    table = ["### (d) APC vs MLM: the SSL-as-MI-bound table with this run's numbers", "",
             "H(Z_target) and the bound are the objective's own dev figures at that checkpoint "
             "(bits per target frame; continuous targets: Gaussian entropy estimates). Best "
             "layers and values: this run, test split, 95 % CI.", "",
             "| model | family | views | Z_target | p_psi | H(Z_target) | bound | best phone MI | "
             "best PER (%) |" + "".join(f" `{lf}` best |" for lf in lfs),
             "|---|---|---|---|---|---|---|---|---|" + "---|" * len(lfs)]
    for r in rows:
        table.append(f"| {r['model']}@step{r['step']} | {r['family']} | {r['views']} | {r['target']} | "
                     f"{r['p_psi']} | {r['h_target']:.2f} | {r['bound']:.2f} | {_fmt_rec(r['phone'])} | "
                     f"{_fmt_rec(r['per'])} |" + "".join(f" {_fmt_rec(x)} |" for x in r["label_free"]))
    return table


def section(results, *, num_bootstrap: int = 2000, num_permutations: int = 10000,
            seed: int = 0, tolerance: int = 1) -> list[str]:
    """The report's "SSL model selection" section (empty when the results hold < 3 zoo points)."""
    res = as_results(results)
    points = zoo_points(res)
    if len(points) < 3:
        return []
    kw = dict(num_bootstrap=num_bootstrap, num_permutations=num_permutations, seed=seed)
    lfs = _label_free(res)
    models = list(dict.fromkeys(p.model for p in points))
    lines = ["## SSL model selection without labels", "",
             f"{len(points)} (model, checkpoint) points of the zoo ({', '.join(models)}; "
             "step 0 = each run's initialisation; checkpoints with identical weights counted once)."
             " Each point is read at the layer the label-free measure picks (its best value: the highest,"
             " the lowest for a lower-is-better one, the nearest its target for alpha_req)."
             f" Verdicts use Kendall τ_b: expected sign, CI excludes 0, p <= {1 - res.ci_level:.2g}"
             " (Spearman ρ shown beside it).", ""]
    verdict_lines, detail, few_points = [], [], 0
    for lf in lfs:
        verdict, more = _layer_pick_lines(res, points, lf, tolerance)
        verdict_lines += verdict
        detail += more
        verdict, more, few = _rank_lines(res, points, lf, kw)
        verdict_lines += verdict
        detail += more
        few_points = few or few_points
    if few_points:
        verdict_lines.append(
            f"- With {few_points} points the smallest two-sided permutation p is "
            f"{2.0 / math.factorial(few_points):.3f} > {1.0 - res.ci_level:.2g}: (b) cannot reach "
            "a verdict here; `experiments/configs/ssl_selection_bundled.py` runs every zoo "
            "checkpoint.")
    for ref in REFERENCES:
        verdict, more = _bound_lines(res, points, ref, kw)
        verdict_lines += verdict
        detail += more
    rows = table1_rows(res, points, lfs)
    table = _table1_lines(rows, lfs)
    fam = family_summary(rows)
    ranked = ["### Which label-free measure selects best", "",
              "Sorted by Kendall τ against PER, sign made positive where the measure agrees.", "",
              *summary_table(summary(res, tolerance=tolerance, **kw)), ""]
    return (lines + ["**Verdict:**", ""] + verdict_lines + [""] + ranked + table + [""]
            + ([f"- {t}" for t in fam] + [""] if fam else []) + detail)
