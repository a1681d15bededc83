"""The zoo's quality floor table from runs of experiments/configs/zoo_quality_bundled.py.

    python experiments/zoo_floor.py runs/zoo_quality/results.json

Per shipped zoo model (its final checkpoint): its best layer's phone MI and linear-CTC PER with
95 % CIs against its own random-init control (``<name>@step0``), log-mel with +-4 frames stacked
and log-mel, and whether the CIs do not overlap (``speechmi_jax.analysis.floor``, the section the
report opens with); with several CTC training runs a head (``ctc.runs``), how far the runs' PERs
spread, per encoder.
"""
import sys

from speechmi_jax.analysis import floor
from speechmi_jax.analysis.results import read_results

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
