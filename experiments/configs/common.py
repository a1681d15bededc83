"""Settings shared by the experiment configs in this folder (each loads this file by path).

One place for the estimator settings, so every experiment measures the same way and the
figures of different configs are comparable; and one place for the ``smoke`` settings that
run any config end to end on the bundled corpus in well under a minute per encoder on a CPU.
"""

from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import base

# Written by experiments/prepare_librispeech.py (LibriSpeech + MFA alignments, splits renamed
# to train/dev/test); relative to the directory the command runs in.
LIBRISPEECH_MANIFEST = "data/librispeech/manifest.tsv"

MEASURES = ["phone", "speaker", "infonce_next_k", "infonce_input", "ctc"]
LIBRISPEECH_MEASURES = [m for m in MEASURES if m != "speaker"]


def base_config(encoders, corpus: str, measures=MEASURES, speaker_domain=None,
                max_train_frames: int = 0):
    """The full-size settings of ``speechmi_jax.configs.base`` (see its docstring for every
    key) for these encoders, corpus and measures."""
    c = base.base_config()
    c.update(corpus=corpus, encoders=list(encoders), measures=list(measures),
             speaker_domain=speaker_domain, max_train_frames=max_train_frames)
    return c


def smoke(c, encoders):
    """Turns ``c`` into its smoke run: bundled corpus, 8 utterances per split, tiny estimators.

    Checks the whole path (features, every measure, results, report) on any machine; the
    numbers mean nothing. ``encoders`` replaces the config's (offline stand-ins of the same
    architectures; point ``--set encoders=...`` at tiny checkpoints for a faster check).
    """
    c.update(corpus="bundled", corpus_options={}, max_utterances_per_split=8,
             encoders=list(encoders), speaker_domain="synthetic", whisper_window_seconds=4.0)
    c.probe.update(steps=10, l2=(0.0,), num_bootstrap=50)
    c.infonce.update(k=16, steps=30, learning_rates=(3e-3,), num_bootstrap=50)
    c.views.max_pairs = 2000
    c.ctc.update(num_steps=20, eval_every=10, batch_size=4, learning_rates=(1e-2,),
                 num_bootstrap=50)
    return c


def ssl_librispeech(arg: str, name: str, encoders, smoke_encoders):
    """The config of an ssl_*_librispeech experiment: LibriSpeech (the prepared manifest),
    every measure but speakers (LibriSpeech's splits are speaker-disjoint)."""
    check_arg(arg, name)
    c = base_config(encoders, LIBRISPEECH_MANIFEST, LIBRISPEECH_MEASURES)
    if arg == "smoke":
        smoke(c, smoke_encoders)
    return c


def check_arg(arg: str, config_name: str):
    config_arg.is_smoke(arg, config_name)
