"""The experiment loop: encoders x corpus -> all-layer features -> every measure -> results.

``run_experiment(config, out_dir)`` does, for each encoder of the config:

1. one encoder pass over the corpus into the all-layer feature cache (``features.py``);
2. for every hidden state: the phone probe bound and accuracy, the speaker probe bound and
   accuracy, label-free InfoNCE bounds (frame t vs frame t+k; frame vs the log-mel input around
   the same instant) and the linear-CTC phone error rate, each trained as one bank over all
   layers (``estimators/``);
3. appends the records to ``results.json`` / ``results.csv`` and rewrites ``report.md`` and the
   plots (``analysis/``).

Resuming: each (encoder, measure) is saved under ``<out>/parts/`` when finished and skipped on
the next run; estimators checkpoint their banks under ``<out>/checkpoints/``; features live in
``<out>/cache/`` keyed by content. Killing a run at any point and rerunning the same command
ends with the same results.

Decisions taken here (and nowhere else):

* **Splits** come from the corpus (disjoint by prompt for the bundled one); the bootstrap and
  the dev split are by utterance.
* **Speaker measure** uses the synthetic, same-channel speakers only when ``speaker_domain``
  is set: a band-limited real recording among synthetic voices would be identified by its
  channel, not its voice (the bundled corpus marks ``domain`` and ``channel`` per utterance).
  Speaker labels are on speech frames (silence excluded). Its interval resamples test
  utterances within each speaker (the test set's speaker composition is fixed by design).
* **InfoNCE views.** ``infonce_next_k``: pairs (z_t, z_{t+k}) of one layer inside one utterance,
  ``k = round(next_k_seconds * frame_rate)``. ``infonce_input``: z_t against the log-mel
  frames within ``input_context_s`` of the frame's centre (stacked), the same input for every
  encoder, so the figures are comparable across encoders.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from pathlib import Path

import numpy as np

from speechmi_jax import frames as frames_lib
from speechmi_jax.analysis import report as report_lib
from speechmi_jax.analysis import results as results_lib
from speechmi_jax.data import phones as phones_lib

log = logging.getLogger("speechmi_jax.pipeline")

MEASURE_GROUPS = ("phone", "speaker", "infonce_next_k", "infonce_input", "ctc")


def slug(name: str) -> str:
    """A file-name-safe form of an encoder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


@dataclasses.dataclass
class FrameView:
    """``hidden[:, frames]`` without copying: [L, P, D] rows gathered from a feature cache.

    Supports exactly the indexing the estimators use: ``view[layer_slice]`` and
    ``view[:, item_idx]``, so a float16 memmap is read only for the rows a bank needs.
    """

    hidden: np.ndarray  # [L, N, D]
    frames: np.ndarray  # [P] frame indices into N

    @property
    def shape(self):
        return (self.hidden.shape[0], self.frames.size, self.hidden.shape[2])

    @property
    def ndim(self):
        return 3

    @property
    def dtype(self):
        return self.hidden.dtype

    def __getitem__(self, key):
        if isinstance(key, slice):
            return FrameView(self.hidden[key], self.frames)
        if isinstance(key, tuple) and len(key) == 2 and key[0] == slice(None):
            return np.asarray(self.hidden[:, self.frames[key[1]]])
        raise TypeError(f"FrameView supports [layers] and [:, items], got {key!r}")


def input_context(fs, lm, context_s: float) -> np.ndarray:
    """For each frame of ``fs``, the log-mel frames of ``lm`` within ``context_s`` of its centre.

    Both feature sets hold the same utterances in the same order. Returns float16
    [N, (2c+1) * D_mel] where c = round(context_s * mel frame rate); frames past an utterance's
    edge repeat its first/last log-mel frame.
    """
    if list(fs.utt_ids) != list(lm.utt_ids):
        raise ValueError("input_context: the feature sets hold different utterances")
    c = int(round(context_s * lm.encoder["frame_rate"]))
    mel = lm.layer(0)
    out = np.empty((fs.num_frames, (2 * c + 1) * mel.shape[1]), np.float16)
    for u in range(fs.num_utterances):
        f0, f1 = int(fs.utt_offsets[u]), int(fs.utt_offsets[u + 1])
        m0, m1 = int(lm.utt_offsets[u]), int(lm.utt_offsets[u + 1])
        centres = frames_lib.frame_centres(f1 - f0, fs.encoder["frame_rate"], fs.encoder["frame_offset_s"])
        idx = np.rint((centres - lm.encoder["frame_offset_s"]) * lm.encoder["frame_rate"]).astype(np.int64)
        win = np.clip(idx[:, None] + np.arange(-c, c + 1)[None, :], 0, m1 - m0 - 1) + m0  # [T, 2c+1]
        out[f0:f1] = np.asarray(mel[win.reshape(-1)]).reshape(f1 - f0, -1)
    return out


class Run:
    """One run directory: parts saved per (encoder, measure), metadata, the final files."""

    def __init__(self, out_dir: Path, config):
        self.out = Path(out_dir)
        self.parts = self.out / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        self.config = config
        cfg_path = self.out / "config.json"
        cfg_json = config.to_json(indent=1, sort_keys=True)
        if cfg_path.exists() and cfg_path.read_text() != cfg_json:
            raise ValueError(
                f"{cfg_path} holds a different config: this run directory belongs to another "
                f"experiment. Use a new --out, or delete {self.out} to start over.")
        cfg_path.write_text(cfg_json)

    def part_path(self, encoder: str, group: str) -> Path:
        return self.parts / f"{slug(encoder)}__{group}.json"

    def load_part(self, encoder: str, group: str):
        p = self.part_path(encoder, group)
        if p.exists():
            return json.loads(p.read_text())
        return None

    def save_part(self, encoder: str, group: str, records: list[dict], seconds: float):
        p = self.part_path(encoder, group)
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps({"records": records, "seconds": seconds}, indent=1))
        tmp.replace(p)


def _record(encoder, layer, measure, value, ci, unit, **extra):
    return {"encoder": encoder, "layer": int(layer), "measure": measure, "value": float(value),
            "ci": [float(ci[0]), float(ci[1])], "unit": unit,
            "extra": {k: v for k, v in extra.items() if v is not None}}


def _estimate_records(encoder, est, mi_measure, acc_measure=None):
    out = []
    for e in est:
        out.append(_record(encoder, e.layer, mi_measure, e.bits, e.ci, "bits",
                           ceiling_bits=e.ceiling_bits, lr=e.lr, l2=e.l2, step=e.step,
                           n_test=e.n_test, accuracy=e.accuracy))
        if acc_measure is not None:
            out.append(_record(encoder, e.layer, acc_measure, e.accuracy, e.accuracy_ci,
                               "fraction", n_test=e.n_test))
    return out


def _frame_splits(fs) -> np.ndarray:
    return np.asarray(fs.splits)[fs.utt_index]


def seen_in_train(y: np.ndarray, splits: np.ndarray, what: str) -> np.ndarray:
    """Unlabels (-1) held-out items whose class never occurs in the training split.

    A probe cannot be scored on a class it never saw; such items are few (rare phones in a
    small corpus) and are logged, never dropped silently.
    """
    seen = np.unique(y[(splits == "train") & (y >= 0)])
    unseen = (y >= 0) & ~np.isin(y, seen)
    if unseen.any():
        log.warning("%s: %d held-out items of classes %s absent from the training split are "
                    "left out", what, int(unseen.sum()), sorted(set(y[unseen].tolist())))
    return np.where(unseen, -1, y).astype(np.int32)


def cap_training_frames(y: np.ndarray, splits: np.ndarray, max_frames: int, seed: int) -> np.ndarray:
    """Keeps at most ``max_frames`` labelled training frames (a seeded random subset; the rest
    become -1). Dev and test frames are all kept, so the reported figure uses every held-out
    frame; the probe's training cost stops growing with the corpus."""
    train = np.flatnonzero((splits == "train") & (y >= 0))
    if not max_frames or train.size <= max_frames:
        return y
    drop = np.random.default_rng(seed).choice(train, train.size - max_frames, replace=False)
    y = y.copy()
    y[drop] = -1
    return y


def measure_phone(fs, cfg, ckpt):
    from speechmi_jax.estimators import api
    y = seen_in_train(fs.phone, _frame_splits(fs), "phone probe")
    y = cap_training_frames(y, _frame_splits(fs), cfg.max_train_frames, cfg.seed)
    est = api.probe_bank(fs.hidden, y, fs.utt_index, _frame_splits(fs),
                         num_classes=len(fs.phone_set), checkpoint_dir=ckpt, **cfg.probe)
    return est


def speaker_labels(fs, corpus, speaker_domain):
    """Frame speaker ids over speech frames (silence/unlabelled = -1), restricted to one domain."""
    domain = {u.id: u.metadata.get("domain") for u in corpus}
    keep_utt = np.array([speaker_domain is None or domain.get(i) == speaker_domain for i in fs.utt_ids])
    names = sorted({s for s, k in zip(fs.speakers, keep_utt) if k})
    if len(names) < 2:
        raise ValueError(f"speaker measure: {len(names)} speakers in domain {speaker_domain!r}; need >= 2")
    ids = np.array([names.index(s) if k else -1 for s, k in zip(fs.speakers, keep_utt)], np.int32)
    sil = phones_lib.PHONE_TO_ID[phones_lib.SILENCE]
    y = ids[fs.utt_index]
    y = np.where((fs.phone >= 0) & (fs.phone != sil), y, -1).astype(np.int32)
    return y, names


def measure_speaker(fs, corpus, cfg, ckpt):
    from speechmi_jax.estimators import api
    y, names = speaker_labels(fs, corpus, cfg.speaker_domain)
    y = cap_training_frames(y, _frame_splits(fs), cfg.max_train_frames, cfg.seed)
    # A test set's speakers and their share of it are chosen by design (every utterance has one
    # speaker), so the interval resamples utterances within each speaker.
    return api.probe_bank(fs.hidden, y, fs.utt_index, _frame_splits(fs), num_classes=len(names),
                          checkpoint_dir=ckpt, stratify_ci=True, **cfg.probe), names


def _subsample(idx: np.ndarray, max_items: int, seed: int) -> np.ndarray:
    if max_items and idx.size > max_items:
        rng = np.random.default_rng(seed)
        idx = np.sort(rng.choice(idx, max_items, replace=False))
    return idx


def measure_infonce_next(fs, cfg, ckpt):
    from speechmi_jax.estimators import api, views
    k = max(1, int(round(cfg.infonce.next_k_seconds * fs.encoder["frame_rate"])))
    ia, ib, _ = views.shift_pairs(fs.utt_offsets, k)
    keep = _subsample(np.arange(ia.size), cfg.infonce.max_pairs, cfg.seed)
    ia, ib = ia[keep], ib[keep]
    opts = {k_: v for k_, v in cfg.infonce.items() if k_ not in ("next_k_seconds", "max_pairs", "input_context_s")}
    est = api.infonce_bank(FrameView(fs.hidden, ia), FrameView(fs.hidden, ib), fs.utt_index[ia],
                           _frame_splits(fs)[ia], checkpoint_dir=ckpt, **opts)
    return est, k


def measure_infonce_input(fs, lm, cfg, ckpt):
    from speechmi_jax.estimators import api
    ctx = input_context(fs, lm, cfg.infonce.input_context_s)  # [N, Dctx]
    idx = _subsample(np.arange(fs.num_frames), cfg.infonce.max_pairs, cfg.seed + 1)
    opts = {k_: v for k_, v in cfg.infonce.items() if k_ not in ("next_k_seconds", "max_pairs", "input_context_s")}
    est = api.infonce_bank(FrameView(fs.hidden, idx), ctx[idx][None], fs.utt_index[idx],
                           _frame_splits(fs)[idx], checkpoint_dir=ckpt, **opts)
    return est


def measure_ctc(fs, corpus, cfg):
    """Linear-CTC PER per layer. Targets come from each utterance's phone *segments* (not the
    frame labels, which lose phones shorter than a frame), so encoders of different frame
    rates are scored against the same references."""
    from speechmi_jax.estimators import ctc
    sil = phones_lib.PHONE_TO_ID[phones_lib.SILENCE]
    by_id = {u.id: u for u in corpus}
    targets = [ctc.ctc_targets([phones_lib.PHONE_TO_ID[p] for _, _, p in by_id[i].phones or ()], sil)
               for i in fs.utt_ids]
    train, dev, test = ctc.splits_from_features(fs, targets=targets)
    keep = lambda split: dataclasses.replace(split, utts=split.utts[[targets[u].size > 0 for u in split.utts]])
    return ctc.ctc_per_bank(keep(train), keep(dev), keep(test), num_phones=len(fs.phone_set), **cfg.ctc)


def _load_encoder(name, cfg):
    import jax.numpy as jnp

    from speechmi_jax.encoders import load_encoder
    enc = load_encoder(name, dtype=jnp.bfloat16 if cfg.encoder_dtype == "bfloat16" else jnp.float32,
                       allow_pickle=bool(cfg.get("allow_pickle", False)))
    if cfg.whisper_window_seconds and "whisper" in name:
        from speechmi_jax.encoders import whisper
        enc = whisper.with_window(enc, cfg.whisper_window_seconds)
    return enc


def run_experiment(config, out_dir) -> results_lib.Results:
    """Runs (or resumes) every encoder x measure of ``config`` into ``out_dir`` -> Results."""
    from speechmi_jax.data.corpus import load_corpus
    from speechmi_jax.features import extract_features

    out = Path(out_dir)
    run = Run(out, config)
    unknown = set(config.measures) - set(MEASURE_GROUPS)
    if unknown:
        raise ValueError(f"config.measures has {sorted(unknown)}: expected a subset of {MEASURE_GROUPS}")
    corpus = load_corpus(config.corpus, **dict(config.corpus_options))
    skipped = [{"id": i, "reason": why} for i, why in corpus.skipped]  # before any filter
    if config.max_utterances_per_split:
        keep = set()
        for s in corpus.splits:
            keep |= {u.id for u in corpus.split(s).utterances[: config.max_utterances_per_split]}
        corpus = corpus.filter(lambda u: u.id in keep)
    cache = Path(config.cache_dir) if config.cache_dir else out / "cache"
    timings: dict[str, dict[str, float]] = {}
    lm = None
    if "infonce_input" in config.measures:
        from speechmi_jax.encoders import load_encoder
        lm = extract_features(load_encoder("logmel"), corpus, cache, progress=config.progress)

    records: list[dict] = []
    for name in config.encoders:
        t = timings.setdefault(name, {})
        todo = [g for g in config.measures if run.load_part(name, g) is None]
        if todo:
            t0 = time.perf_counter()
            enc = _load_encoder(name, config)
            fs = extract_features(enc, corpus, cache, progress=config.progress)
            t["features_s"] = time.perf_counter() - t0
        for group in config.measures:
            part = run.load_part(name, group)
            if part is None:
                log.info("%s: %s", name, group)
                t0 = time.perf_counter()
                ckpt = str((out / "checkpoints" / slug(name) / group).resolve())
                recs = _measure(group, name, fs, lm, corpus, config, ckpt)
                run.save_part(name, group, recs, time.perf_counter() - t0)
                part = run.load_part(name, group)
            t[group + "_s"] = part["seconds"]
            records += part["records"]

    metadata = {
        "config": json.loads(config.to_json()),
        "corpus": {"name": corpus.name, "utterances": len(corpus),
                   "hours": corpus.total_duration_s / 3600.0, "speakers": corpus.speakers},
        "timings_s": timings,
        "skipped": skipped,
        "ci_level": 0.95,
    }
    res = results_lib.as_results(records, metadata)
    results_lib.write_results(out, res)
    report_lib.write_report(res, out, seed=config.seed)
    return res


def _measure(group, name, fs, lm, corpus, config, ckpt) -> list[dict]:
    if group == "phone":
        return _estimate_records(name, measure_phone(fs, config, ckpt), "phone_mi", "phone_acc")
    if group == "speaker":
        est, names = measure_speaker(fs, corpus, config, ckpt)
        recs = _estimate_records(name, est, "speaker_mi", "speaker_acc")
        for r in recs:
            r["extra"]["speakers"] = names
        return recs
    if group == "infonce_next_k":
        est, k = measure_infonce_next(fs, config, ckpt)
        recs = _estimate_records(name, est, "infonce_next_k")
        for r in recs:
            r["extra"]["k_frames"] = k
        return recs
    if group == "infonce_input":
        return _estimate_records(name, measure_infonce_input(fs, lm, config, ckpt), "infonce_input")
    if group == "ctc":
        return [r.record(name) for r in measure_ctc(fs, corpus, config)]
    raise ValueError(f"unknown measure group {group!r}")
