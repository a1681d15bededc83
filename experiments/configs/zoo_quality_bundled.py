"""The model zoo's quality floor: phone MI and linear-CTC PER at every layer of each shipped zoo
model, its own random-init control (``<name>@step0``, the run's initialisation), log-mel,
log-mel with +-4 frames stacked (context alone) and log-mel with the 8 frames before stacked
(the context a causal model can see: APC's context floor), on the bundled corpus.

Evidence that pretraining learned something: at its best layer a zoo model should beat log-mel
+-4 stacked (a causal model: also log-mel with the 8 frames before) and its random-init control
on phone MI (probe bound, test split) with
non-overlapping 95 % CIs, and on PER by at least 10 points. ``corpus_options={'domain': 'real'}``
runs the same on the bundled corpus's one recorded (real) speaker alone: 77 training, 16 dev and
17 test utterances; ``corpus_options={'eval_domain': 'real'}`` trains on the whole training split
(462 utterances) and chooses and scores on the real speaker's dev and test utterances.
The probe: 50 L-BFGS steps, l2 in {1e-3, 1e-2} chosen on dev, at most 20k training frames; CTC:
1000 Adam steps of 16 utterances at 3e-3 or 3e-2, chosen on dev, three training runs per head
(seeds 0-2): the PER is their mean and its interval carries their spread as well as the test
set's (a head's PER moves by several points from one run to another; ``estimators/ctc.py``).

    speechmi run experiments/configs/zoo_quality_bundled.py --out runs/zoo_quality
    speechmi run experiments/configs/zoo_quality_bundled.py --out runs/zoo_quality_real \
        --set "corpus_options={'domain': 'real'}"
    speechmi run experiments/configs/zoo_quality_bundled.py --out runs/zoo_quality_transfer \
        --set "corpus_options={'eval_domain': 'real'}"
    speechmi run experiments/configs/zoo_quality_bundled.py --smoke --out runs/zoo_quality_smoke
    python experiments/zoo_floor.py runs/zoo_quality/results.json     # the floor table

Checkpoints that are not shipped (a run's ``models/step<N>/``) go in with
``--set encoders="['runs/zoo/melhubert-4x256/models/step1000', ...]"``.
"""

import importlib.util
from pathlib import Path

from speechmi_jax import zoo

_spec = importlib.util.spec_from_file_location("speechmi_experiments_common",
                                               Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

BASELINES = ["logmel", "logmel-stack4", "logmel-past8"]


def encoders() -> list[str]:
    return [e for name in zoo.names() for e in (name, f"{name}@step0")] + BASELINES


def get_config(arg: str = ""):
    common.check_arg(arg, "zoo_quality_bundled")
    c = common.base_config(encoders(), "bundled", ["phone", "ctc"], max_train_frames=20000)
    c.probe.update(steps=50, l2=(1e-3, 1e-2))
    c.ctc.update(learning_rates=(3e-3, 3e-2), num_steps=1000, batch_size=16, eval_every=250, runs=3)
    if arg == "smoke":
        common.smoke(c, encoders())
    return c
