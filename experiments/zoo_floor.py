"""The zoo's quality floor table from runs of experiments/configs/zoo_quality_bundled.py.

    python experiments/zoo_floor.py runs/zoo_quality/results.json
    python experiments/zoo_floor.py bundled=runs/q_bundled/results.json real=runs/q_real/results.json

Per shipped zoo model (its final checkpoint): its best layer's phone MI and linear-CTC PER with
95 % CIs against its own random-init control (``<name>@step0``), log-mel with +-4 frames stacked
and log-mel, and whether the CIs do not overlap (``speechmi_jax.analysis.floor``, the section the
report opens with); with several CTC training runs a head (``ctc.runs``), how far the runs' PERs
spread, per encoder.

Given ``LABEL=results.json`` pairs instead (runs of the same config on several corpora or
splits), one row per encoder of the first run: its best layer's phone MI and PER in each run,
side by side (for encoders that are not a shipped model and its ``@step0``, e.g. variants of a
recipe shipped to a folder of ``$SPEECHMI_ZOO_PATH``).
"""
import sys

from speechmi_jax.analysis import correlation as corr
from speechmi_jax.analysis import floor
from speechmi_jax.analysis.formatting import fmt_ci
from speechmi_jax.analysis.results import read_results

if len(sys.argv) > 1 and all("=" in a for a in sys.argv[1:]):
    by_label = {label: read_results(path) for label, _, path in (a.partition("=") for a in sys.argv[1:])}
    cols = [(label, m, unit) for label in by_label for m, unit in ((floor.PHONE, "bits"), (floor.PER, "%"))]
    print("| encoder | " + " | ".join(f"{label}: `{m}` ({unit})" for label, m, unit in cols) + " |")
    print("| --- |" + " --- |" * len(cols))
    for enc in next(iter(by_label.values())).encoders():
        cells = []
        for label, m, _ in cols:
            r = corr.best_layer(by_label[label], enc, m)
            cells.append("-" if r is None else f"{fmt_ci(r)} (layer {r.layer})")
        print(f"| {enc} | " + " | ".join(cells) + " |")
    sys.exit()

res = read_results(sys.argv[1])
print("\n".join(floor.section(res)[4:]))

# With several CTC training runs a head (ctc.runs): how far the runs' PERs spread, per encoder
# over its layers, against the width of the intervals that now carry that spread.
spread: dict[str, list] = {}
for r in res.records:
    runs = r.extra.get("run_pers") if r.measure == floor.PER else None
    if runs:
        spread.setdefault(r.encoder, []).append((max(runs) - min(runs), r.ci[1] - r.ci[0]))
if spread:
    fmt = lambda v: f"{min(v):.1f}" if min(v) == max(v) else f"{min(v):.1f}-{max(v):.1f}"
    print("| encoder | spread of the runs' PERs over its layers (points) | interval width (points) |")
    print("| --- | --- | --- |")
    for enc, rows in spread.items():
        print(f"| {enc} | {fmt([a for a, _ in rows])} | {fmt([b for _, b in rows])} |")
