"""The one config schema: every run config (the demo, ``experiments/configs/*``) builds on
:func:`base_config` and changes values, never keys; :func:`validate` checks a config against
it before any work.

Keys (full-size defaults; each experiment file says what it changes):

* ``corpus``, ``corpus_options``: what ``load_corpus`` reads; ``max_utterances_per_split``
  (0 = all).
* ``encoders``: names or paths for ``load_encoder`` (each once); ``encoder_dtype``
  (``float32`` or ``bfloat16``); ``allow_pickle`` (lets ``pytorch_model.bin``-only checkpoints
  load: pickle runs code); ``whisper_window_seconds`` (Whisper's analysis window, None = the
  model's native 30 s; other encoders have no window).
* ``measures``: names from ``speechmi_jax.measures.REGISTRY``; ``speaker_domain`` (the
  speaker measure's domain filter, None = every utterance); ``max_train_frames`` (probes train
  on at most this many frames, a seeded subset; 0 = all; dev/test: every frame).
* ``cache_dir`` (feature cache; "" = ``<out>/cache``), ``progress``, ``seed``.
* ``probe``, ``infonce``, ``infonce_same``, ``ctc``: keyword arguments of
  ``estimators.api.probe_bank`` (also the ``codes_next_k`` softmax), ``api.infonce_bank``,
  ``generic.infonce_same_utterance_bank`` (``infonce_next_k_same``) and ``ctc.ctc_per_bank``.
* ``views``: how the label-free measures' views are formed (``measures.py``):
  ``next_k_seconds`` (frame t vs t + k), ``input_context_s`` (log-mel frames within this
  distance of the frame's centre), ``num_codes`` (k-means codes of the log-mel window, the
  target of ``codes_next_k`` and ``codes_masked``), ``max_pairs`` (a seeded subset of the
  pairs, 0 = all), ``masked_span_s`` / ``masked_fraction`` (``codes_masked``: spans of this
  length hide this fraction of each utterance's frames, in the encoder's own frames).
* ``spectral``: the rank-based measures (``rankme``, ``alpha_req``, ``lidar``, ``cca_logmel``;
  ``estimators/spectral.py``): ``max_frames`` (each statistic uses at most this many frames of
  a split, a seeded subset; 0 = all), ``num_bootstrap`` (replicates of the utterance
  bootstrap), ``alpha_ranks`` (alpha-ReQ's fit range, 1-based ranks [lo, hi]),
  ``lidar_shift_s`` (a LiDAR item's two views: frames t and t + k, k this many seconds in the
  encoder's frames), ``lidar_delta`` (LiDAR's ridge on the within-item scatter, relative to its
  mean eigenvalue), ``cca_l2`` (the CCA shrinkage grid, chosen on dev).
"""

from __future__ import annotations

import inspect
import numbers

import ml_collections

from speechmi_jax.configs import ranges
from speechmi_jax.configs.ranges import FRACTION, SEED, at_least, between, count, positive
from speechmi_jax.estimators import api, ctc, generic
from speechmi_jax.measures import REGISTRY, file_name

ENCODER_DTYPES = ("float32", "bfloat16")
# Arguments the pipeline passes itself; a config may not set them.
_SUPPLIED = {"probe": ("num_classes", "checkpoint_dir", "stratify_ci"),
             "infonce": ("checkpoint_dir",), "infonce_same": ("seed", "checkpoint_dir"),
             "ctc": ("num_phones", "checkpoint_dir")}


class ConfigError(ValueError):
    """A config file, key or value that cannot be used."""


def base_config() -> ml_collections.ConfigDict:
    """The full-size settings: every layer of every encoder, every measure, 95% bootstrap CIs.

    Probes: L-BFGS, 100 full-batch steps, l2 in {0, 1e-4, 1e-3} chosen per layer on dev.
    InfoNCE: separable MLP critic (256 hidden, 64-d embedding), K = 128 candidates
    (ceiling log2 128 = 7 bits), 2000 Adam steps, learning rate in {1e-3, 3e-3} chosen on dev;
    same-utterance InfoNCE: K = 32 frames of one utterance (5 bits), 8 utterance blocks a step;
    next-frame view at k = 100 ms, input view = log-mel frames within 20 ms of the frame,
    64 k-means codes of it as the predictive target.
    Linear CTC: 3000 Adam steps of 32 utterances, learning rate in {3e-3, 1e-2, 3e-2}.
    Rank-based measures: at most 20000 frames a split, 1000 bootstrap replicates, alpha-ReQ
    over ranks 4..100, LiDAR's views 20 ms apart, CCA shrinkage in {1e-4, 1e-3, 1e-2, 1e-1}
    chosen on dev.
    """
    c = ml_collections.ConfigDict()
    c.corpus = "bundled"
    c.corpus_options = {}
    c.max_utterances_per_split = 0
    c.encoders = ["logmel"]
    c.encoder_dtype = "float32"
    c.allow_pickle = False
    c.whisper_window_seconds = None
    c.measures = list(REGISTRY)
    c.speaker_domain = None
    c.max_train_frames = 0
    c.cache_dir = ""
    c.progress = True
    c.seed = 0
    c.probe = ml_collections.ConfigDict(dict(
        optimizer="lbfgs", steps=100, l2=(0.0, 1e-4, 1e-3), seeds=(0,), num_bootstrap=1000))
    c.infonce = ml_collections.ConfigDict(dict(
        k=128, critic="separable", hidden=256, embed=64, steps=2000,
        learning_rates=(1e-3, 3e-3), num_bootstrap=1000))
    c.infonce_same = ml_collections.ConfigDict(dict(
        k=32, critic="separable", hidden=256, embed=64, steps=2000, blocks_per_step=8,
        learning_rates=(1e-3, 3e-3), num_bootstrap=1000))
    c.views = ml_collections.ConfigDict(dict(
        next_k_seconds=0.1, input_context_s=0.02, num_codes=64, max_pairs=200000,
        masked_span_s=0.2, masked_fraction=0.3))
    c.ctc = ml_collections.ConfigDict(dict(
        learning_rates=(3e-3, 1e-2, 3e-2), num_steps=3000, batch_size=32, eval_every=250,
        runs=1, num_bootstrap=1000))
    # Ranges: RANGES below (alpha_ranks must also be lo < hi: estimators/spectral.py checks it).
    c.spectral = ml_collections.ConfigDict(dict(
        max_frames=20000, num_bootstrap=1000, alpha_ranks=(4, 100), lidar_shift_s=0.02,
        lidar_delta=1e-4, cca_l2=(1e-4, 1e-3, 1e-2, 1e-1)))
    return c


# Allowed values of every numeric key (:mod:`configs.ranges`; a list's items each). A key added
# to the schema needs its range here (tests/test_hostile.py walks every numeric key).
RANGES = {
    "corpus_options.sample_rate": count(1000, "Hz"),
    "corpus_options.alignment_tolerance_s": at_least(0, "seconds"),
    "max_utterances_per_split": count(0),
    "whisper_window_seconds": positive("seconds; None = the model's own window"),
    "max_train_frames": count(0),
    "seed": SEED,
    "views.next_k_seconds": positive("seconds"),
    "views.input_context_s": at_least(0, "seconds"),
    "views.num_codes": count(2, "codes"),
    "views.max_pairs": count(0, "0 = all"),
    "views.masked_span_s": positive("seconds"),
    "views.masked_fraction": FRACTION,
    "spectral.max_frames": count(0, "0 = all"),
    "spectral.num_bootstrap": count(1),
    "spectral.alpha_ranks": count(1, "PCA ranks"),
    "spectral.lidar_shift_s": positive("seconds"),
    "spectral.lidar_delta": positive(),
    "spectral.cca_l2": between(0, 1, hi_open=True),
}
# The estimator sections' settings (``probe.*``, ``infonce.*``, ``infonce_same.*``, ``ctc.*``):
# one name means one thing in every section that has it.
ESTIMATOR_RANGES = {
    "steps": count(1), "num_steps": count(1), "eval_every": count(1), "batch_size": count(1),
    "checkpoint_every": count(1), "learning_rates": positive(), "l2": at_least(0),
    "seeds": SEED, "seed": SEED, "runs": count(1, "training runs"), "hidden": count(1),
    "embed": count(1), "k": count(2, "candidates"), "blocks_per_step": count(1), "dev_fraction": FRACTION,
    "num_bootstrap": count(1), "ci_level": FRACTION, "layer_chunk": count(1),
    "max_resident_bytes": count(1), "mesh_shape": count(1), "layers": count(0),
    "blank_bias": between(-100, 100, unit="a logit"), "num_buckets": count(1),
}


def run_ranges() -> dict:
    """:data:`RANGES` plus :data:`ESTIMATOR_RANGES` under each section that takes the setting."""
    table = dict(RANGES)
    for section in ESTIMATOR_SECTIONS:
        for name in estimator_settings(section):
            if name in ESTIMATOR_RANGES:
                table[f"{section}.{name}"] = ESTIMATOR_RANGES[name]
    return table


# ----------------------------------------------------------------------------- validation

_NAMES = {bool: "bool", int: "int", float: "number", str: "string"}


def _type_name(t) -> str:
    name = _NAMES.get(t, t.__name__)
    return ("an " if name[0] in "aeiou" else "a ") + name


def _check_value(key: str, value, like, *, none_ok: bool = False):
    """``value`` must have the type of the schema's ``like`` (an int is a fine float; lists and
    tuples are interchangeable, their items typed like ``like``'s first item)."""
    if value is None:
        if none_ok:
            return
        raise ConfigError(f"config key {key!r}: expected {_describe(like)}, got None")
    if isinstance(like, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(like, bool)
    elif isinstance(like, int):
        ok = isinstance(value, numbers.Integral)
    elif isinstance(like, float):
        ok = isinstance(value, numbers.Real)
    elif isinstance(like, str):
        ok = isinstance(value, str)
    elif isinstance(like, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        if ok and like:
            for i, item in enumerate(value):
                _check_value(f"{key}[{i}]", item, like[0])
    elif isinstance(like, dict) or hasattr(like, "items"):
        ok = hasattr(value, "items")
    else:
        ok = True
    if not ok:
        raise ConfigError(f"config key {key!r}: expected {_describe(like)}, got {value!r}")


def _describe(like) -> str:
    if isinstance(like, (list, tuple)):
        return "a list" + (f" of {_NAMES.get(type(like[0]), 'item')}s" if like else "")
    if hasattr(like, "items"):
        return "a dict"
    return _type_name(type(like))


ESTIMATOR_SECTIONS = tuple(_SUPPLIED)


def estimator_settings(section: str) -> set[str]:
    """The keyword arguments a config may set in ``probe`` / ``infonce`` / ``infonce_same`` /
    ``ctc``: those of ``api.probe_bank`` / ``api.infonce_bank`` /
    ``generic.infonce_same_utterance_bank`` / ``ctc.ctc_per_bank`` the pipeline leaves open."""
    fn = {"probe": api.probe_bank, "infonce": api.infonce_bank,
          "infonce_same": generic.infonce_same_utterance_bank, "ctc": ctc.ctc_per_bank}[section]
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind == p.KEYWORD_ONLY} - set(_SUPPLIED[section])


def validate(config) -> ml_collections.ConfigDict:
    """Checks every key and value of a run config against :func:`base_config` -> config.

    Raises :class:`ConfigError` naming the key and what was expected: unknown or missing keys,
    wrong types, unknown or repeated measures, repeated encoders, unknown estimator arguments.
    """
    base = base_config()
    unknown, missing = set(config) - set(base), set(base) - set(config)
    if unknown or missing:
        raise ConfigError(f"config keys: unknown {sorted(unknown)}, missing {sorted(missing)}; "
                          f"expected {sorted(base)}")
    for key, like in base.items():
        value = config[key]
        if key in ESTIMATOR_SECTIONS + ("views", "spectral"):
            _check_section(key, value, like)
            continue
        _check_value(key, value, like if like is not None else _NONE_TYPES[key],
                     none_ok=like is None)
    if config.encoder_dtype not in ENCODER_DTYPES:
        raise ConfigError(f"config key 'encoder_dtype': {config.encoder_dtype!r} is not one of "
                          f"{ENCODER_DTYPES}")
    ranges.check(config, run_ranges(), ConfigError)
    _no_repeats("encoders", list(config.encoders), key_fn=file_name)
    _no_repeats("measures", list(config.measures))
    bad = [m for m in config.measures if m not in REGISTRY]
    if bad:
        raise ConfigError(f"config key 'measures': unknown {bad}; expected a subset of "
                          f"{list(REGISTRY)}")
    return config


_NONE_TYPES = {"whisper_window_seconds": 1.0, "speaker_domain": ""}


def _check_section(section: str, value, like):
    if not hasattr(value, "items"):
        raise ConfigError(f"config key {section!r}: expected a dict of settings, got {value!r}")
    if section in ("views", "spectral"):
        allowed = set(like)
    else:
        allowed = estimator_settings(section)
    for key, v in value.items():
        if key in _SUPPLIED.get(section, ()):
            raise ConfigError(f"config key '{section}.{key}' is set by the pipeline; remove it")
        if key not in allowed:
            close = ", ".join(sorted(allowed))
            raise ConfigError(f"config key '{section}.{key}' is not a setting of {section}; "
                              f"expected one of: {close}")
        if key in like:
            _check_value(f"{section}.{key}", v, like[key])
    if section in ("views", "spectral"):
        missing = set(like) - set(value)
        if missing:
            raise ConfigError(f"config key {section!r}: missing {sorted(missing)}")


def _no_repeats(key: str, items: list, key_fn=lambda x: x):
    seen: dict = {}
    for item in items:
        k = key_fn(item)
        if k in seen:
            same = "twice" if seen[k] == item else f"as {seen[k]!r} and {item!r} (same file name)"
            raise ConfigError(f"config key {key!r}: {item!r} is listed {same}; list each once")
        seen[k] = item

