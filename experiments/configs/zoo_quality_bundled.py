"""The model zoo's quality floor: phone MI at every layer of each zoo model, its own random-init
control (``<name>@step0``, the run's initialisation) and log-mel, on the bundled corpus.

Evidence that pretraining learned something: at its best layer a zoo model should beat log-mel
and its random-init control on phone MI (probe bound) on the test split, with non-overlapping
CIs. The probe: 50 L-BFGS steps, l2 = 1e-3, at most 20k training frames.

    speechmi run experiments/configs/zoo_quality_bundled.py --out runs/zoo_quality
    speechmi run experiments/configs/zoo_quality_bundled.py --smoke --out runs/zoo_quality_smoke
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("speechmi_experiments_common",
                                               Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

ZOO = ["apc-small", "vqapc-small", "hubert-it1-small", "hubert-it2-small", "data2vec-small"]
ENCODERS = [e for name in ZOO for e in (name, f"{name}@step0")] + ["logmel"]


def get_config(arg: str = ""):
    common.check_arg(arg, "zoo_quality_bundled")
    c = common.base_config(ENCODERS, "bundled", ["phone"], max_train_frames=20000)
    # l2 = 1e-3: the setting README's floor table was made with (the demo now uses 1e-2).
    c.probe.update(steps=50, l2=(1e-3,))
    if arg == "smoke":
        common.smoke(c, ENCODERS)
    return c
