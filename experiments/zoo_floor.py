"""The zoo's quality floor table from runs of experiments/configs/zoo_quality_bundled.py.

    python experiments/zoo_floor.py runs/zoo_quality/results.json

Per shipped zoo model (its final checkpoint): its best layer's phone MI and linear-CTC PER with
95 % CIs against its own random-init control (``<name>@step0``), log-mel with +-4 frames stacked
and log-mel, and whether the CIs do not overlap (``speechmi_jax.analysis.floor``, the section the
report opens with).
"""
import sys

from speechmi_jax.analysis import floor
from speechmi_jax.analysis.results import read_results

print("\n".join(floor.section(read_results(sys.argv[1]))[4:]))
