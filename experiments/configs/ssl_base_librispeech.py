"""Base-size self-supervised encoders on LibriSpeech: every layer, every measure.

Reproduces the base-model half of the layer-wise analysis in Liu, Yeh & Glass, "Revisiting
self-supervised learning of speech representation from a mutual information perspective"
(ICASSP 2024): per layer of wav2vec 2.0, HuBERT, WavLM+ and data2vec-audio (base), the phone
probe bound I(phone; z) with its accuracy, the label-free InfoNCE bounds (frame t vs t + 100 ms,
frame vs its log-mel input) and the linear-CTC phone error rate; then whether the label-free
measure ranks layers and models like the supervised ones (report.md: rank correlations with
bootstrap CIs). Log-mel is the input baseline. No speaker measure: LibriSpeech's splits are
speaker-disjoint.

    python experiments/prepare_librispeech.py --textgrid-dir librispeech_alignments/   # once
    speechmi run experiments/configs/ssl_base_librispeech.py --out runs/ssl_base

Expected cost (an estimate from FLOP and byte counts, not a measurement): 800 utterances
(500 train-clean-100 / 100 dev-clean / 200 test-clean, ~2.4 h of audio, ~430k frames);
~0.5 PFLOP for the four encoder passes and ~3.5 PFLOP of estimator training (probes ~1.6,
linear CTC ~1.8, InfoNCE ~0.15), i.e. about a minute of compute on one H100 or a TPU v4-8 at
30% of peak. Wall time is bounded by the rest: ~20-40 min there, for feature-cache I/O
(~8.5 GB float16 written and ~35 GB read per encoder), XLA compilation and the CTC host loop;
~15-30 h on a 2-core CPU. Checkpoints must be in the local Hugging Face cache
(``huggingface-cli download facebook/hubert-base-ls960`` etc.) or given as local folders.

    speechmi run experiments/configs/ssl_base_librispeech.py --smoke --out runs/ssl_base_smoke

runs the same path on the bundled corpus with randomly initialised encoders of the same four
architectures (~5-10 min on a 2-core CPU); with tiny checkpoints it takes ~1-3 min:

    python experiments/tiny_checkpoints.py /tmp/tiny     # prints --set encoders="[...]"
    speechmi run experiments/configs/ssl_base_librispeech.py --smoke --set encoders="[...]"
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("speechmi_experiments_common",
                                               Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

ENCODERS = ["facebook/wav2vec2-base", "facebook/hubert-base-ls960", "microsoft/wavlm-base-plus",
            "facebook/data2vec-audio-base", "logmel"]
# Offline stand-ins for --smoke: the same architectures, randomly initialised.
SMOKE_ENCODERS = ["random:wav2vec2-base", "random:hubert-base", "random:wavlm-base",
                  "random:data2vec-audio-base", "logmel"]


def get_config(arg: str = ""):
    return common.ssl_librispeech(arg, "ssl_base_librispeech", ENCODERS, SMOKE_ENCODERS)
