"""Settings shared by the experiment configs in this folder (each loads this file by path).

One place for the estimator settings, so every experiment measures the same way and the
figures of different configs are comparable; and one place for the ``smoke`` settings that
run any config end to end on the bundled corpus in well under a minute per encoder on a CPU.
"""

import ml_collections

# Written by experiments/prepare_librispeech.py (LibriSpeech + MFA alignments, splits renamed
# to train/dev/test); relative to the directory the command runs in.
LIBRISPEECH_MANIFEST = "data/librispeech/manifest.tsv"

MEASURES = ["phone", "speaker", "infonce_next_k", "infonce_input", "ctc"]
LIBRISPEECH_MEASURES = [m for m in MEASURES if m != "speaker"]


def base_config(encoders, corpus: str, measures=MEASURES, speaker_domain=None,
                max_train_frames: int = 0):
    """The full-size settings: every layer of every encoder, every measure, 95% bootstrap CIs.

    Probes: L-BFGS, 100 full-batch steps, l2 in {0, 1e-4, 1e-3} chosen per layer on dev.
    InfoNCE: separable MLP critic (256 hidden, 64-d embedding), K = 128 candidates
    (ceiling log2 128 = 7 bits), 2000 Adam steps, learning rate in {1e-3, 3e-3} chosen on dev;
    next-frame view at k = 100 ms, input view = log-mel frames within 20 ms of the frame.
    Linear CTC: 3000 Adam steps of 32 utterances, learning rate in {3e-3, 1e-2, 3e-2}.
    """
    c = ml_collections.ConfigDict()
    c.corpus = corpus
    c.corpus_options = {}
    c.max_utterances_per_split = 0  # 0 = all
    c.encoders = list(encoders)
    c.encoder_dtype = "float32"
    c.whisper_window_seconds = 30.0
    c.measures = list(measures)
    c.speaker_domain = speaker_domain
    # Probes train on at most this many frames (a seeded subset; 0 = all); dev/test: all frames.
    c.max_train_frames = max_train_frames
    c.cache_dir = ""  # default <out>/cache
    c.progress = True
    c.seed = 0
    c.probe = ml_collections.ConfigDict(dict(
        optimizer="lbfgs", steps=100, l2=(0.0, 1e-4, 1e-3), seeds=(0,), num_bootstrap=1000))
    c.infonce = ml_collections.ConfigDict(dict(
        k=128, critic="separable", hidden=256, embed=64, steps=2000,
        learning_rates=(1e-3, 3e-3), num_bootstrap=1000,
        next_k_seconds=0.1, input_context_s=0.02, max_pairs=200000))
    c.ctc = ml_collections.ConfigDict(dict(
        learning_rates=(3e-3, 1e-2, 3e-2), num_steps=3000, batch_size=32, eval_every=250,
        num_bootstrap=1000))
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
    c.infonce.update(k=16, steps=30, learning_rates=(3e-3,), num_bootstrap=50, max_pairs=2000)
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
    if arg not in ("", "smoke"):
        raise ValueError(f"{config_name}: unknown config argument {arg!r}; expected '' or 'smoke'")
