"""The run loop: encoders x corpus -> all-layer features -> every measure -> results.

``run_experiment(config, out_dir)``:

1. validates the config (``configs/base.py``) and, once the folder is held, loads the corpus
   and checks its splits before anything is written or computed;
2. for each encoder: every measure's saved-part key (its settings and the feature cache keys
   of the passes it reads: weights + corpus content + masking); then the features stage
   (:class:`FeatureStage`) extracts, once each, the passes that the measures whose saved part
   is missing, stale or damaged (``rundir.py``) read: the encoder's all-layer pass, its masked
   pass when a measure is registered with ``needs_masked``, the log-mel pass for those with
   ``needs_input`` (``features.py``, cached on disk); then the measures stage computes each
   such measure from those passes (``measures.Inputs``: features only, never the encoder);
3. writes ``results.json`` / ``results.csv``, ``report.md`` and the plots (``analysis/``).

Killing a run at any point and rerunning the same command ends with the same results:
finished measures are reused from ``<out>/parts/``, a measure in progress resumes from its
estimator checkpoints, an encoder pass from the batches already cached. SIGINT / SIGTERM stop
it at the next step boundary with that step checkpointed (``interrupt.py``); one command holds
the run folder at a time (``rundir.claim``).

Several processes (``distributed.py``) run this loop in step: each encodes its share of the
utterances (``features.py``), every estimator bank trains on one mesh of all their devices, and
every process computes the same records from the gathered held-out items; whether a saved part
is reused is process 0's decision, and process 0 alone writes parts, results, report and plots.

Compilation: XLA executables are cached on disk in one folder per user
(``training.use_compilation_cache``: JAX's persistent compilation cache, ``xla`` in
``$SPEECHMI_CACHE`` or ~/.cache/speechmi_jax, unless ``JAX_COMPILATION_CACHE_DIR`` names
another), so estimator banks of equal shapes compile once across encoders, runs and run
folders.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import logging
import time
from pathlib import Path
from typing import Optional

import jax
import jax.numpy as jnp

from speechmi_jax import measures as measures_lib
from speechmi_jax.analysis import report as report_lib
from speechmi_jax.analysis import results as results_lib
from speechmi_jax.configs import base as config_lib
from speechmi_jax.data.corpus import load_corpus, no_usable_utterance
from speechmi_jax.encoders import load_encoder
from speechmi_jax.estimators.train import RELEASE_MIN_BYTES
from speechmi_jax.features import FeatureSet, extract_features, feature_cache_key
from speechmi_jax import distributed, interrupt, rundir
from speechmi_jax.training import trim_heap, use_compilation_cache
from speechmi_jax.rundir import PART_SCHEMA, RunDir, claim

log = logging.getLogger("speechmi_jax.pipeline")


def configured_encoder(name: str, config):
    """The encoder ``name`` as the config asks (dtype, pickle opt-in, Whisper window)."""
    dtype = jnp.bfloat16 if config.encoder_dtype == "bfloat16" else jnp.float32
    return load_encoder(name, dtype=dtype, allow_pickle=bool(config.allow_pickle),
                        window_seconds=config.whisper_window_seconds)


def release_memory():
    """Returns what a finished measure freed to the OS before the next one loads its features:
    a full collection (jax keeps the source of its latest ``device_put`` until the next one or
    a collection), then glibc's ``malloc_trim`` (freed heap pages otherwise stay in the
    process: measured ~200 MB after two measures on Whisper tiny.en). Elsewhere a no-op."""
    gc.collect()
    trim_heap()


def forget_executables():
    """Drops every compiled executable and jit cache (``jax.clear_caches``), then
    :func:`release_memory`. The run calls it when an encoder's features differ in shape
    ([layers, dim]) from the previous encoder's: the measures' programs are compiled per feature
    shape, an encoder of another shape reuses none of them, and kept they add up. On the demo
    (seven encoders, four shapes) the process peak fell from 2743 to 2077 MB with the same
    records and time (BENCHMARKS.md, "Demo"); encoders of one shape in a row still share theirs.
    ``jax.clear_caches`` is process-wide: a notebook that calls ``run_experiment`` finds its own
    jitted functions recompiling once afterwards (the results are the same)."""
    jax.clear_caches()
    release_memory()


BACKEND_COMPILE_EVENT = "/jax/core/compile/backend_compile_duration"
_compile = {"seconds": 0.0, "count": 0}


def _count_compile(event: str, duration: float, **_):
    if event == BACKEND_COMPILE_EVENT:
        _compile["seconds"] += duration
        _compile["count"] += 1


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def compile_seconds() -> float:
    """XLA compilation seconds of this process so far (executables loaded from the persistent
    cache cost none); the pipeline records each stage's share as ``<stage>_compile_s``."""
    return _compile["seconds"]


def part_key(measure: str, config, features_key: str, input_key) -> dict:
    """What a saved part's numbers depend on (see ``rundir.py``), as JSON reads it back."""
    return json.loads(json.dumps(
        {"schema": PART_SCHEMA, "features": features_key, "input_features": input_key,
         "settings": measures_lib.settings_of(measure, config)}, sort_keys=True))


def check_splits(corpus, config):
    """Every measure trains on the ``train`` split and reports on ``test`` (``dev`` may be
    missing: the estimators then hold out training utterances); a split left without an
    utterance is refused naming what emptied it."""
    for split in ("train", "test"):
        if any(u.split == split for u in corpus):
            continue
        counts = ", ".join(f"{s} {sum(u.split == s for u in corpus)}" for s in corpus.splits)
        why = f"no utterance of corpus {config.corpus!r} is in it (splits: {counts or 'none'})"
        if corpus.skipped:
            uid, reason = corpus.skipped[0]
            why += (f"; corpus_options.on_error='skip' left out {len(corpus.skipped)} "
                    f"utterance(s), e.g. {uid}: {reason}")
        raise no_usable_utterance(split, why + "; every measure trains on 'train' and reports "
                                              "on 'test'")


def saved_part(run: RunDir, file: str, measure: str, key: dict, defaults: Optional[dict] = None):
    """The measure's saved part to reuse, or None to compute it: process 0's decision on
    every process (``distributed.agree``), so all of them compute it together or none does.
    ``defaults``: ``key`` under the schema's default settings (a part written before a setting
    was added, which ``key`` gives its default, is reused: ``rundir.load_part``)."""
    part = run.load_part(file, measure, key, defaults)
    if distributed.agree(part is None):
        return None
    if part is None:
        raise FileNotFoundError(f"{run.part_path(file, measure)}: process 0 reuses this part, "
                                f"process {distributed.process_index()} cannot read it: is "
                                f"{run.out} one folder every process sees?")
    return part


@dataclasses.dataclass
class Features:
    """What the features stage hands one encoder's measures: each pass they read, or None."""

    fs: FeatureSet                       # the encoder's all-layer pass
    input_fs: Optional[FeatureSet]       # the log-mel pass (measures with needs_input)
    masked_fs: Optional[FeatureSet]      # the masked pass (measures with needs_masked)


class FeatureStage:
    """The features stage of a run: the cache keys that key each measure's saved part, and
    every pass an encoder's measures still to compute read, each extracted once: the encoder's
    all-layer pass, its masked pass (``features.Masking`` as ``measures.masking_of`` the config)
    when a measure needs it, and the log-mel pass (once a run, shared by every encoder)."""

    def __init__(self, corpus, cache: Path, config, progress: bool):
        self.corpus, self.cache, self.config, self.progress = corpus, cache, config, progress
        registered = [measures_lib.REGISTRY[m] for m in config.measures]
        self.masking = (measures_lib.masking_of(config)
                        if any(m.needs_masked for m in registered) else None)
        self.input_enc = (configured_encoder("logmel", config)
                          if any(m.needs_input for m in registered) else None)
        self.input_key = None if self.input_enc is None else feature_cache_key(self.input_enc,
                                                                               corpus)
        self.input_fs = None

    def part_keys(self, enc) -> dict[str, dict]:
        """Each configured measure's saved-part key (``part_key``) for encoder ``enc``."""
        clean = feature_cache_key(enc, self.corpus)
        masked = (None if self.masking is None
                  else feature_cache_key(enc, self.corpus, masking=self.masking))
        out = {}
        for name in self.config.measures:
            m = measures_lib.REGISTRY[name]
            out[name] = part_key(name, self.config, masked if m.needs_masked else clean,
                                 self.input_key if m.needs_input else None)
        return out

    def extract(self, enc, todo: list, timings: dict) -> Optional[Features]:
        """The passes the measures ``todo`` read (None when there is none to compute);
        seconds of the encoder's passes go to ``timings`` (``features_s``, ``masked_features_s``
        and their ``_compile_s``)."""
        if not todo:
            return None
        fs = self._timed(enc, None, timings, "features")
        masked = (self._timed(enc, self.masking, timings, "masked_features")
                  if any(m.needs_masked for m in todo) else None)
        if self.input_fs is None and any(m.needs_input for m in todo):
            self.input_fs = extract_features(self.input_enc, self.corpus, self.cache,
                                             progress=self.progress)
        return Features(fs, self.input_fs, masked)

    def _timed(self, enc, masking, timings: dict, what: str) -> FeatureSet:
        t0, c0 = time.perf_counter(), compile_seconds()
        fs = extract_features(enc, self.corpus, self.cache, masking=masking,
                              progress=self.progress)
        timings[what + "_s"] = time.perf_counter() - t0
        timings[what + "_compile_s"] = compile_seconds() - c0
        return fs


def compute_part(run: RunDir, stage: FeatureStage, name: str, m, key: dict, feats: Features,
                 timings: dict) -> dict:
    """The measures stage for one measure of encoder ``name``: its records from the features
    stage's passes, saved as its part (``rundir.RunDir.save_part``), which is returned."""
    file = measures_lib.file_name(name)
    interrupt.check_all(f"{name} / {m.name} (not started)")
    log.info("%s: %s", name, m.name)
    t0, c0 = time.perf_counter(), compile_seconds()
    try:
        recs = m.compute(measures_lib.Inputs(
            encoder=name, fs=feats.fs, corpus=stage.corpus, config=stage.config,
            checkpoint_dir=run.checkpoint_dir(file, m.name, key),
            input_features=feats.input_fs if m.needs_input else None,
            masked_features=feats.masked_fs if m.needs_masked else None))
    except interrupt.Interrupted as e:
        raise interrupt.Interrupted(e.signum, f"{name} / {m.name}, {e.where}") from None
    part = run.save_part(file, m.name, key, recs, time.perf_counter() - t0)
    timings[m.name + "_compile_s"] = compile_seconds() - c0
    del recs
    if feats.fs.hidden.nbytes >= RELEASE_MIN_BYTES:
        release_memory()
    return part


def run_experiment(config, out_dir, *, wait: bool = False) -> results_lib.Results:
    """Runs (or resumes) every encoder x measure of ``config`` into ``out_dir`` -> Results.

    The config is checked first (nothing is written for a refused one); the run folder is then
    held against a second writer (``wait``: wait for it instead of failing, ``rundir.claim``)
    and SIGINT / SIGTERM stop at the next step boundary (``interrupt.py``)."""
    config_lib.validate(config)
    with claim(out_dir, wait=wait) as out:
        return _run(config, out)


def _run(config, out: Path) -> results_lib.Results:
    # The corpus loads before config.json is written: a run refused here leaves the folder to
    # the corrected command.
    corpus = load_corpus(config.corpus, **dict(config.corpus_options))
    skipped = [{"id": i, "reason": why} for i, why in corpus.skipped]  # before any filter
    if config.max_utterances_per_split:
        keep = set()
        for s in corpus.splits:
            keep |= {u.id for u in corpus.split(s).utterances[: config.max_utterances_per_split]}
        corpus = corpus.filter(lambda u: u.id in keep)
    check_splits(corpus, config)
    # A folder started before config keys were added resumes under their defaults
    # (rundir.resumed_config); so do its parts (saved_part).
    defaults = config_lib.base_config()
    as_text = lambda c: c.to_json(indent=1, sort_keys=True)
    run = RunDir(out, rundir.resumed_config(out / "config.json", as_text(config), as_text(defaults)))
    cache = Path(config.cache_dir) if config.cache_dir else out / "cache"
    use_compilation_cache()

    progress = bool(config.progress) and distributed.is_main()
    stage = FeatureStage(corpus, cache, config, progress)
    timings: dict[str, dict[str, float]] = {}
    records: list[dict] = []
    last_shape = None  # the feature shape the kept executables were compiled for
    for name in config.encoders:
        t = timings.setdefault(name, {})
        file = measures_lib.file_name(name)
        enc = configured_encoder(name, config)
        keys = stage.part_keys(enc)
        parts = {m: saved_part(run, file, m, keys[m], part_key(m, defaults, keys[m]["features"],
                                                               keys[m]["input_features"]))
                 for m in config.measures}
        todo = [measures_lib.REGISTRY[m] for m in config.measures if parts[m] is None]
        feats = stage.extract(enc, todo, t)   # the features stage: every pass the measures need
        del enc
        if feats is not None:
            shape = feats.fs.hidden.shape[::2]  # [L, N, D] -> (L, D)
            if last_shape is not None and shape != last_shape:
                forget_executables()
            last_shape = shape
        for m in todo:
            parts[m.name] = compute_part(run, stage, name, m, keys[m.name], feats, t)
        for measure in config.measures:
            t[measure + "_s"] = parts[measure]["seconds"]
            records += parts[measure]["records"]
        big = feats is not None and feats.fs.hidden.nbytes >= RELEASE_MIN_BYTES
        del feats, parts
        if big:
            release_memory()

    res = results_lib.as_results(records, {
        "config": json.loads(config.to_json()),
        "corpus": {"name": corpus.name, "utterances": len(corpus),
                   "hours": corpus.total_duration_s / 3600.0, "speakers": corpus.speakers},
        "timings_s": timings, "skipped": skipped, "ci_level": 0.95})
    if distributed.is_main():
        results_lib.write_results(out, res)
        report_lib.write_report(res, out, seed=config.seed)
    return res
