"""All-layer features of a corpus, extracted once and cached on disk.

``extract_features(enc, corpus, cache_dir)`` runs the encoder over the corpus in
length-bucketed, padded batches (one forward pass per batch yields every layer), keeps each
utterance's real frames (``enc.num_frames``) and streams them into a float16 ``.npy`` array
``hidden [L+1, N, D]`` (N = real frames of all utterances, utterances in corpus order,
grouped by split), with per-frame phone labels (the phone under the frame centre,
:func:`speechmi_jax.frames.segments_to_frame_labels`; ``IGNORE`` = -1 where none) and
per-utterance ids, speakers and splits.

Cache: ``<cache_dir>/<key>/`` where ``key`` hashes the encoder's name, a fingerprint of its
parameters and facts, the corpus' fingerprint (ids, speakers, splits, phones, audio files'
sizes and times) and the options. Extraction writes into ``<key>.partial/`` and renames it
when done, so an interrupted run never leaves a cache that looks complete; the next run
resumes from the batches already written (``done.npy`` marks them). One process extracts an
entry at a time (``<key>.lock``, :mod:`speechmi_jax.locks`): a second one that needs the same
entry (another run sharing the cache) waits for it and then reads the finished entry. Memory stays bounded:
batches are written with ``os.pwrite`` (page cache, not the process' heap) and the result is
opened memory-mapped.

Masked pass (``extract_features(..., masking=Masking(span_s, fraction, seed))``): the encoder
runs again with spans of each utterance masked (``Encoder.apply_masked``) and only the masked
frames are kept: a feature set of those frames, with ``frame_index`` [M] naming each one's row
in the clean feature set. The spans are a function of the utterance id, the seed and the
encoder's frame rate (:meth:`Masking.frames`), so every run masks the same frames; the cache
key adds the masking settings and the mask embedding's fingerprint.

Several processes (``distributed.py``) share one extraction: each encodes every N-th utterance
of the split-ordered list into its own shard entry ``<key>.shard-<i>-of-<N>/`` (an ordinary
entry of that sub-corpus: resumable, locked), then process 0 copies the shards' frames into
the entry ``<key>/`` (one sequential pass over the features, layer by layer) and deletes the
shards; every process opens the merged entry. Nobody encodes an utterance twice, and the entry
is the one a single process would have written (the same rows, up to the encoder's rounding
in another batch).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax import frames as frames_lib
from speechmi_jax import distributed, interrupt, locks
from speechmi_jax.encoders.base import Encoder, bucket_length

log = logging.getLogger("speechmi_jax.features")

FORMAT_VERSION = 1
DEFAULT_CACHE = Path(os.environ.get("SPEECHMI_CACHE", Path.home() / ".cache" / "speechmi_jax"))


@dataclasses.dataclass
class FeatureSet:
    """All-layer frame features of a corpus (or of one of its splits).

    Attributes:
      hidden: [L+1, N, D] float16, memory-mapped; frames of all utterances concatenated.
      phone: int32 [N], index into ``phone_set``; -1 (``frames.IGNORE``) = unlabelled.
      utt_index: int32 [N], the utterance (row of ``utt_ids``) of each frame.
      utt_offsets: int64 [U+1]; utterance u owns frames ``utt_offsets[u]:utt_offsets[u+1]``.
      utt_ids, speakers, splits: per-utterance strings [U].
      speaker: int32 [U], index into ``speaker_set``.
      phone_set, speaker_set: label names.
      encoder: facts of the encoder (name, num_layers, hidden_size, frame_rate,
        frame_offset_s, sample_rate).
      path: cache folder (None for an in-memory subset).
      key: the cache key (:func:`feature_cache_key`): changes with the encoder's weights, the
        corpus' content and the extraction options.
      frame_index: a masked pass' frames (module docstring) as rows of the clean feature set of
        the same encoder and corpus (None for a clean set).
    """

    hidden: np.ndarray
    phone: np.ndarray
    utt_index: np.ndarray
    utt_offsets: np.ndarray
    utt_ids: list[str]
    speakers: list[str]
    splits: list[str]
    speaker: np.ndarray
    phone_set: tuple[str, ...]
    speaker_set: tuple[str, ...]
    encoder: dict
    path: Optional[Path] = None
    key: str = ""
    frame_index: Optional[np.ndarray] = None  # int64 [N], masked pass only: rows of the clean set

    @property
    def num_layers(self) -> int:
        """L + 1 (hidden states, the transformer input included)."""
        return int(self.hidden.shape[0])

    @property
    def num_frames(self) -> int:
        return int(self.hidden.shape[1])

    @property
    def num_utterances(self) -> int:
        return len(self.utt_ids)

    def layer(self, l: int) -> np.ndarray:
        """[N, D] features of hidden state ``l`` (a memory-mapped view)."""
        return self.hidden[l]

    def pooled(self, layers: Optional[Sequence[int]] = None) -> np.ndarray:
        """Mean over each utterance's frames -> float32 [len(layers), U, D]."""
        layers = range(self.num_layers) if layers is None else layers
        starts = self.utt_offsets[:-1] - self.utt_offsets[0]
        counts = np.diff(self.utt_offsets).astype(np.float32)
        if np.any(counts == 0):
            raise ValueError(f"utterances with no frames: "
                             f"{[self.utt_ids[i] for i in np.flatnonzero(counts == 0)][:5]}")
        return np.stack([np.add.reduceat(self.hidden[l], starts, axis=0, dtype=np.float32)
                         / counts[:, None] for l in layers])

    def split(self, name: str) -> "FeatureSet":
        """The utterances of one split (a contiguous view: extraction groups splits)."""
        rows = [i for i, s in enumerate(self.splits) if s == name]
        if not rows:
            raise KeyError(f"no split {name!r}; splits are {sorted(set(self.splits))}")
        a, b = rows[0], rows[-1] + 1
        if b - a != len(rows):
            raise ValueError(f"split {name!r} is not contiguous in this feature set")
        f0, f1 = int(self.utt_offsets[a]), int(self.utt_offsets[b])
        return dataclasses.replace(
            self, hidden=self.hidden[:, f0:f1], phone=self.phone[f0:f1],
            utt_index=self.utt_index[f0:f1] - a, utt_offsets=self.utt_offsets[a:b + 1] - f0,
            utt_ids=self.utt_ids[a:b], speakers=self.speakers[a:b], splits=self.splits[a:b],
            speaker=self.speaker[a:b],
            frame_index=None if self.frame_index is None else self.frame_index[f0:f1])


def params_fingerprint(params) -> str:
    """sha256 over every parameter's path, shape, dtype and bytes."""
    h = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        arr = np.asarray(leaf)
        h.update(f"{jax.tree_util.keystr(path)}|{arr.shape}|{arr.dtype}".encode())
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()[:20]


def encoder_facts(enc: Encoder) -> dict:
    return dict(name=enc.name, num_layers=int(enc.num_layers), hidden_size=int(enc.hidden_size),
                frame_rate=float(enc.frame_rate), frame_offset_s=float(enc.frame_offset_s),
                sample_rate=int(enc.sample_rate), dtype=str(jnp.dtype(enc.dtype)))


def cache_key(enc: Encoder, corpus, options: dict) -> str:
    payload = json.dumps(dict(version=FORMAT_VERSION, encoder=encoder_facts(enc),
                              params=params_fingerprint(enc.params),
                              corpus=corpus.fingerprint(), options=options), sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:24]


@dataclasses.dataclass(frozen=True)
class Masking:
    """The spans a masked pass hides: ``span_s`` seconds each (``round(span_s * frame_rate)``
    frames, at least 1), ``fraction`` of each utterance's frames, placed by ``seed`` and the
    utterance id (config keys ``views.masked_span_s``, ``views.masked_fraction``, ``seed``)."""

    span_s: float
    fraction: float
    seed: int

    def __post_init__(self):
        if not self.span_s > 0 or not 0 < self.fraction < 1:
            raise ValueError(f"Masking(span_s={self.span_s}, fraction={self.fraction}): expected "
                             f"span_s > 0 and 0 < fraction < 1")

    def span_frames(self, frame_rate: float) -> int:
        return max(1, int(round(self.span_s * frame_rate)))

    def frames(self, utt_id: str, num_frames: int, frame_rate: float) -> np.ndarray:
        """bool [num_frames]: ``n = round(fraction * T / span)`` spans (at most ``T // span``;
        none in an utterance shorter than a span) that never overlap, the unmasked frames split
        into the n + 1 gaps around them by a multinomial draw seeded by (seed, utterance id):
        exactly ``n * span`` frames are masked."""
        span = self.span_frames(frame_rate)
        n = min(int(round(self.fraction * num_frames / span)), num_frames // span)
        out = np.zeros(num_frames, bool)
        if n == 0:
            return out
        uid = int.from_bytes(hashlib.sha256(utt_id.encode()).digest()[:8], "little")
        rng = np.random.default_rng([self.seed, uid])
        gaps = rng.multinomial(num_frames - n * span, np.full(n + 1, 1.0 / (n + 1)))
        starts = np.cumsum(gaps[:n]) + span * np.arange(n)
        for s0 in starts:
            out[s0:s0 + span] = True
        return out


def _options(dtype, enc: Optional[Encoder] = None, masking: Optional[Masking] = None) -> dict:
    options = dict(dtype=np.dtype(dtype).name, label="frame-centre")
    if masking is not None:
        options.update(masking=dataclasses.asdict(masking),
                       mask_params=params_fingerprint(enc.mask_params))
    return options


def feature_cache_key(enc: Encoder, corpus, dtype=np.float16,
                      masking: Optional[Masking] = None) -> str:
    """The key :func:`extract_features` files ``enc``'s features of ``corpus`` under, computed
    without extracting (it hashes the weights and the corpus' fingerprint)."""
    return cache_key(enc, corpus.with_sample_rate(enc.sample_rate), _options(dtype, enc, masking))


def _order_by_split(corpus) -> list:
    """Utterances grouped by split (splits in order of first appearance), stable inside."""
    first: dict[str, int] = {}
    for i, u in enumerate(corpus):
        first.setdefault(u.split, i)
    return sorted(corpus, key=lambda u: first[u.split])


def _batches(lengths: np.ndarray, batch_size: int, max_batch_samples: int, sample_rate: int):
    """Length-sorted batches of utterance indices; each padded to one bucket length."""
    order = np.argsort(lengths, kind="stable")
    batch: list[int] = []
    for i in order:
        cand = batch + [int(i)]
        padded = bucket_length(int(lengths[cand[-1]]), sample_rate)
        if batch and (len(cand) > batch_size or len(cand) * padded > max_batch_samples):
            yield batch
            cand = [int(i)]
        batch = cand
    if batch:
        yield batch


def extract_features(enc: Encoder, corpus, cache_dir: str | os.PathLike | None = None, *,
                     batch_size: int = 16, max_batch_seconds: float = 240.0,
                     dtype=np.float16, progress: bool = True,
                     masking: Optional[Masking] = None) -> FeatureSet:
    """Features of every layer for every utterance of ``corpus``, cached (see module doc).

    Args:
      enc: the encoder; a corpus read at another rate than ``enc.sample_rate`` is resampled
        from the files' native rates with soxr (logged).
      corpus: a :class:`speechmi_jax.data.corpus.Corpus`.
      cache_dir: where caches live (default ``$SPEECHMI_CACHE`` or ~/.cache/speechmi_jax).
      batch_size: most utterances per forward pass.
      max_batch_seconds: most padded audio per forward pass (bounds memory).
      dtype: storage dtype (float16 halves the disk; values beyond its range raise).
      progress: show a tqdm bar.
      masking: the masked pass (module docstring): only the masked frames are kept.

    Several processes (``distributed.py``; the cache folder must be one folder they all see):
    each encodes its share of the utterances (``distributed.share`` of the split-ordered list)
    into its own shard entry ``<key>.shard-<i>-of-<N>/`` (resumable like any entry), process 0
    then merges the shards into the entry ``<key>/`` and every process opens that one.
    """
    corpus = corpus.with_sample_rate(enc.sample_rate)  # resampled (and logged) if needed
    if len(corpus) == 0:
        raise ValueError(f"corpus {corpus.name!r} has no utterances")
    dtype = np.dtype(dtype)
    if masking is not None:
        enc.check_can_mask()
    options = _options(dtype, enc, masking)
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE
    key = cache_key(enc, corpus, options)
    plan = functools.partial(_Plan, enc=enc, dtype=dtype, masking=masking, batch_size=batch_size,
                             max_batch_seconds=max_batch_seconds, progress=progress)
    final = cache_dir / key
    if distributed.agree((final / "meta.json").exists()):
        log.info("reusing cached features %s", final)
        return load_features(final)
    if distributed.process_count() == 1:
        return _cached(plan(corpus=corpus, key=key), cache_dir, key)
    shards = _shards(enc, corpus, options, plan)
    mine = shards[distributed.process_index()]
    if mine is not None:
        _cached(mine, cache_dir, f"{key}.shard-{distributed.process_index()}-of-{len(shards)}")
    distributed.barrier(f"features {key}: every shard extracted")
    distributed.on_main(lambda: _merged(plan(corpus=corpus, key=key), cache_dir, len(shards)),
                        f"merging the feature shards of {final}")
    return load_features(final)


def _merged(plan: _Plan, cache_dir: Path, num_shards: int) -> FeatureSet:
    """The entry ``plan.key`` merged from its shards, which are then deleted (the entry holds
    every frame they held)."""
    names = [f"{plan.key}.shard-{p}-of-{num_shards}" for p in range(num_shards)]
    fs = _cached(plan, cache_dir, plan.key, [n for n in names if (cache_dir / n).is_dir()])
    for name in names:
        shutil.rmtree(cache_dir / name, ignore_errors=True)  # lock files stay (locks.py)
    return fs


@dataclasses.dataclass(frozen=True)
class _Plan:
    """One extraction: ``enc``'s features of ``corpus``, filed under ``key``."""

    enc: Encoder
    corpus: object
    key: str
    dtype: np.dtype
    masking: Optional[Masking]
    batch_size: int
    max_batch_seconds: float
    progress: bool


def _shards(enc: Encoder, corpus, options: dict, plan) -> list:
    """Per process, the :class:`_Plan` of its share of the split-ordered utterances (None for
    a process left without one: more processes than utterances)."""
    utts = _order_by_split(corpus)
    out = []
    for p in range(distributed.process_count()):
        ids = {utts[i].id for i in distributed.share(len(utts), p)}
        sub = corpus.filter(lambda u: u.id in ids)
        out.append(plan(corpus=sub, key=cache_key(enc, sub, options))
                   if ids else None)
    return out


def _cached(plan: _Plan, cache_dir: Path, name: str, shards=None) -> FeatureSet:
    """The finished entry ``<cache_dir>/<name>``: found, or made (encoded, or merged from the
    entries named ``shards``) under the entry's lock. One writer per entry: a second process (another
    run sharing the cache) waits here, then finds the finished entry. Readers never see a
    half-written one: it appears by a rename."""
    final, partial = cache_dir / name, cache_dir / f"{name}.partial"
    if (final / "meta.json").exists():
        log.info("reusing cached features %s", final)
        return load_features(final)
    with locks.hold(cache_dir / f"{name}.lock", what=f"feature cache entry {final}", wait=True):
        if (final / "meta.json").exists():
            log.info("reusing cached features %s (extracted by another process)", final)
            return load_features(final)
        layout = _layout(plan)
        done = _open_partial(partial, layout)
        if shards is None:
            _encode(plan, layout, partial, done)
        else:
            _merge(layout, partial, [load_features(cache_dir / n) for n in shards])
        # Renamed before the lock is released: a process waiting on it must find the finished
        # entry, not the moment between (it would start the entry afresh in a new .partial and,
        # renaming its own, replace this one: measured under load, 2 batches encoded twice).
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
    return load_features(final)


@dataclasses.dataclass
class _Layout:
    """Where every utterance's frames go in an entry: ``utts`` in file order, their sample
    ``lengths`` and encoder frame counts ``nframes``, the frames kept (``keep``: None, or the
    masked ones per utterance), ``offsets`` [U+1] of each one's stored rows; ``meta`` and the
    per-frame arrays (``phone.npy`` ...) the entry holds."""

    utts: list
    lengths: np.ndarray
    nframes: np.ndarray
    keep: Optional[list]
    offsets: np.ndarray
    meta: dict
    arrays: dict


def _layout(plan: _Plan) -> _Layout:
    enc, corpus, masking = plan.enc, plan.corpus, plan.masking
    utts = _order_by_split(corpus)
    lengths = np.asarray([u.num_samples for u in utts], dtype=np.int64)
    nframes = enc.num_frames(lengths)
    if np.any(nframes <= 0):
        bad = [utts[i].id for i in np.flatnonzero(nframes <= 0)]
        raise ValueError(f"utterances too short for one {enc.name} frame: {bad[:5]}")
    keep = _masked_frames(enc, utts, nframes, masking)  # None, or bool [T_u] per utterance
    stored = nframes if keep is None else np.asarray([k.sum() for k in keep], np.int64)
    offsets = np.concatenate([[0], np.cumsum(stored)]).astype(np.int64)
    if keep is not None and offsets[-1] == 0:
        raise ValueError(f"masking {masking}: no utterance of {corpus.name!r} is as long as one "
                         f"span ({masking.span_frames(enc.frame_rate)} {enc.name} frames)")
    n_total, n_hidden, width = int(offsets[-1]), enc.num_layers + 1, enc.hidden_size
    phone_set = tuple(corpus.phone_set)
    label_to_id = {p: i for i, p in enumerate(phone_set)}
    phone = np.concatenate([
        frames_lib.segments_to_frame_labels(u.phones or (), int(n), enc.frame_rate,
                                            enc.frame_offset_s, label_to_id)
        for u, n in zip(utts, nframes)]).astype(np.int32)
    arrays = {"phone": phone if keep is None else phone[np.concatenate(keep)],
              "utt_index": np.repeat(np.arange(len(utts), dtype=np.int32), stored),
              "utt_offsets": offsets}
    if keep is not None:
        arrays["frame_index"] = np.flatnonzero(np.concatenate(keep))
    meta = dict(version=FORMAT_VERSION, key=plan.key, encoder=encoder_facts(enc),
                corpus=corpus.name, shape=[n_hidden, n_total, width], dtype=plan.dtype.name,
                utt_ids=[u.id for u in utts], speakers=[u.speaker for u in utts],
                splits=[u.split for u in utts],
                speaker_set=sorted({u.speaker for u in utts}), phone_set=list(phone_set))
    if masking is not None:
        meta["masking"] = dataclasses.asdict(masking)
    return _Layout(utts, lengths, nframes, keep, offsets, meta, arrays)


def _open_partial(partial: Path, layout: _Layout) -> np.ndarray:
    """Resumes ``partial`` if it was started for this layout, else starts it afresh (a sparse
    ``hidden.npy``, the per-frame arrays, ``meta.json``) -> done [U] bool."""
    done_path = partial / "done.npy"
    meta = layout.meta
    if ((partial / "meta.json").exists() and done_path.exists()
            and json.loads((partial / "meta.json").read_text()) == meta):
        done = np.load(done_path)
        log.info("resuming %s: %d of %d utterances already extracted", partial,
                 int(done.sum()), len(layout.utts))
        return done
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    np.lib.format.open_memmap(partial / "hidden.npy", mode="w+", dtype=np.dtype(meta["dtype"]),
                              shape=tuple(meta["shape"])).flush()  # a sparse file
    for name, arr in layout.arrays.items():
        np.save(partial / f"{name}.npy", arr)
    (partial / "meta.json").write_text(json.dumps(meta))
    return np.zeros(len(layout.utts), dtype=bool)


def _encode(plan: _Plan, layout: _Layout, partial: Path, done: np.ndarray) -> None:
    """Encodes the utterances not ``done`` into ``partial/hidden.npy``, batch by batch
    (``done.npy`` records each finished batch; the run stops between two on a signal)."""
    from tqdm.auto import tqdm

    enc, utts, lengths = plan.enc, layout.utts, layout.lengths
    hidden_path = partial / "hidden.npy"
    header = _npy_header_size(hidden_path)
    batches = [b for b in _batches(lengths, plan.batch_size,
                                   int(plan.max_batch_seconds * enc.sample_rate),
                                   enc.sample_rate) if not done[b].all()]
    fd = os.open(hidden_path, os.O_RDWR)
    try:
        for batch in tqdm(batches, desc=f"features {enc.name}", unit="batch",
                          disable=not plan.progress):
            padded = bucket_length(int(lengths[batch].max()), enc.sample_rate)
            wav = np.zeros((len(batch), padded), dtype=np.float32)
            for j, i in enumerate(batch):
                audio = utts[i].audio
                if audio.shape[0] != lengths[i]:
                    raise ValueError(f"{utts[i].audio_path}: decoded {audio.shape[0]} samples, "
                                     f"header said {lengths[i]}")
                wav[j, :lengths[i]] = audio
            if layout.keep is None:
                out = enc(wav, lengths[batch])
            else:
                fmask = np.zeros((len(batch), int(enc.num_frames(padded))), bool)
                for j, i in enumerate(batch):
                    fmask[j, :layout.nframes[i]] = layout.keep[i]
                out = enc.apply_masked(wav, lengths[batch], fmask)
            _write_batch(fd, header, plan, layout, batch, out)
            del out
            done[batch] = True
            os.fsync(fd)
            np.save(partial / "done.npy", done)
            interrupt.check(f"features of {enc.name}: {int(done.sum())} of {len(utts)} "
                            f"utterances (kept in {partial})")
    finally:
        os.close(fd)


def _write_batch(fd: int, header: int, plan: _Plan, layout: _Layout, batch, out) -> None:
    """Checks one forward pass' hidden states and writes each utterance's kept frames at its
    rows of every layer (``os.pwrite``: page cache, not the process' heap)."""
    enc, (n_hidden, n_total, width) = plan.enc, layout.meta["shape"]
    hs = np.asarray(out.hidden_states.astype(jnp.float32))  # [L+1, B, T, D]
    mask = np.asarray(out.mask)
    if hs.shape[0] != n_hidden or hs.shape[3] != width:
        raise ValueError(f"{enc.name}: hidden_states {hs.shape}, expected "
                         f"[{n_hidden}, B, T, {width}]")
    row_bytes = width * plan.dtype.itemsize
    for j, i in enumerate(batch):
        n, uid = int(layout.nframes[i]), layout.utts[i].id
        if int(mask[j].sum()) != n or hs.shape[2] < n:
            raise ValueError(f"{enc.name}: {int(mask[j].sum())} real frames for "
                             f"{uid}, num_frames says {n}")
        block = hs[:, j, :n] if layout.keep is None else hs[:, j, :n][:, layout.keep[i]]
        block = block.astype(plan.dtype)
        if not np.all(np.isfinite(block)):
            raise FloatingPointError(
                f"{enc.name}: features of {uid} overflow {plan.dtype.name} (or are "
                f"NaN); extract with dtype=np.float32")
        for l in range(n_hidden):
            pos = header + (l * n_total + int(layout.offsets[i])) * row_bytes
            os.pwrite(fd, np.ascontiguousarray(block[l]).tobytes(), pos)


MERGE_ROWS = 1 << 16  # frames copied at a time per layer when merging shards (~100 MB at D=768)


def _merge(layout: _Layout, partial: Path, shards: list[FeatureSet]) -> None:
    """Copies every shard's frames to their rows of ``partial/hidden.npy`` (layer by layer,
    ``MERGE_ROWS`` frames at a time), checking that the shards hold each utterance once with
    its frame count."""
    row_of = {u.id: i for i, u in enumerate(layout.utts)}
    counts = np.diff(layout.offsets)
    hidden = np.load(partial / "hidden.npy", mmap_mode="r+")
    seen = np.zeros(len(layout.utts), bool)
    for fs in shards:
        dst = np.asarray([row_of[uid] for uid in fs.utt_ids])
        if seen[dst].any() or not np.array_equal(np.diff(fs.utt_offsets), counts[dst]):
            raise ValueError(f"feature shard {fs.path} does not match the corpus' utterances "
                             f"(repeated, or other frame counts): delete it to extract it again")
        seen[dst] = True
        rows = np.concatenate([np.arange(layout.offsets[i], layout.offsets[i + 1]) for i in dst])
        for l in range(hidden.shape[0]):
            for c in range(0, rows.size, MERGE_ROWS):
                hidden[l, rows[c:c + MERGE_ROWS]] = fs.hidden[l, c:c + MERGE_ROWS]
    if not seen.all():
        missing = [layout.utts[i].id for i in np.flatnonzero(~seen)][:5]
        raise ValueError(f"feature shards of {partial} miss utterances, e.g. {missing}")
    hidden.flush()
    del hidden


def _masked_frames(enc: Encoder, utts, nframes, masking: Optional[Masking]):
    """Per utterance, its masked frames (bool [T_u]), or None without masking."""
    if masking is None:
        return None
    return [masking.frames(u.id, int(n), enc.frame_rate) for u, n in zip(utts, nframes)]


def _npy_header_size(path: Path) -> int:
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            np.lib.format.read_array_header_1_0(f)
        else:
            np.lib.format.read_array_header_2_0(f)
        return f.tell()


def load_features(path: str | os.PathLike) -> FeatureSet:
    """Opens a finished cache folder (memory-mapped, read-only)."""
    path = Path(path)
    meta_path = path / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{path}: not a finished feature cache (no meta.json)")
    meta = json.loads(meta_path.read_text())
    hidden = np.load(path / "hidden.npy", mmap_mode="r")
    if list(hidden.shape) != meta["shape"]:
        raise ValueError(f"{path}/hidden.npy has shape {hidden.shape}, meta says {meta['shape']}")
    spk_id = {s: i for i, s in enumerate(meta["speaker_set"])}
    return FeatureSet(
        hidden=hidden, phone=np.load(path / "phone.npy"),
        utt_index=np.load(path / "utt_index.npy"), utt_offsets=np.load(path / "utt_offsets.npy"),
        utt_ids=meta["utt_ids"], speakers=meta["speakers"], splits=meta["splits"],
        speaker=np.asarray([spk_id[s] for s in meta["speakers"]], dtype=np.int32),
        phone_set=tuple(meta["phone_set"]), speaker_set=tuple(meta["speaker_set"]),
        encoder=meta["encoder"], path=path, key=meta.get("key", path.name),
        frame_index=(np.load(path / "frame_index.npy") if (path / "frame_index.npy").exists()
                     else None))
