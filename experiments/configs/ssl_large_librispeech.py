"""Large self-supervised encoders on LibriSpeech: every layer, every measure.

Reproduces the large-model half of the layer-wise analysis in Liu, Yeh & Glass, "Revisiting
self-supervised learning of speech representation from a mutual information perspective"
(ICASSP 2024): per layer (24 + input) of wav2vec 2.0 (LV-60k), HuBERT (LL-60k), WavLM and
data2vec-audio (large), the phone probe bound and accuracy, the label-free InfoNCE bounds
(frame t vs t + 100 ms, frame vs its log-mel input) and the linear-CTC phone error rate, and
whether the label-free measure ranks layers and models like the supervised ones. The first
three are pre-LN ("stable layer norm") models: their last hidden state includes the encoder's
final LayerNorm (the s3prl convention). Same corpus and estimators as ssl_base_librispeech.py,
so the two runs' results can be pooled.

    python experiments/prepare_librispeech.py --textgrid-dir librispeech_alignments/   # once
    speechmi run experiments/configs/ssl_large_librispeech.py --out runs/ssl_large

Expected cost (an estimate from FLOP and byte counts, not a measurement): the same ~2.4 h of
audio; ~1.3 PFLOP for the four encoder passes and ~9 PFLOP of estimator training (probes ~4,
linear CTC ~4.6, InfoNCE ~0.4), a few minutes of compute on one H100 or a TPU v4-8 at 30% of
peak; ~45-90 min of wall time there, for feature-cache I/O (~22 GB float16 written and ~90 GB
read per encoder: put ``cache_dir`` on a disk with ~90 GB free) and compilation.

    speechmi run experiments/configs/ssl_large_librispeech.py --smoke --out runs/ssl_large_smoke

runs the same path on the bundled corpus with randomly initialised encoders of the same four
architectures (~10-20 min on a 2-core CPU, an estimate); with tiny pre-LN checkpoints it takes ~1 min:

    python experiments/tiny_checkpoints.py /tmp/tiny --large   # prints --set encoders="[...]"
    speechmi run experiments/configs/ssl_large_librispeech.py --smoke --set encoders="[...]"
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("speechmi_experiments_common",
                                               Path(__file__).with_name("common.py"))
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)

ENCODERS = ["facebook/wav2vec2-large-lv60", "facebook/hubert-large-ll60k", "microsoft/wavlm-large",
            "facebook/data2vec-audio-large", "logmel"]
SMOKE_ENCODERS = ["random:wav2vec2-large", "random:hubert-large", "random:wavlm-large",
                  "random:data2vec-audio-large", "logmel"]


def get_config(arg: str = ""):
    return common.ssl_librispeech(arg, "ssl_large_librispeech", ENCODERS, SMOKE_ENCODERS)
