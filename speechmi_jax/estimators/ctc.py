"""Layer-wise phone error rate of linear CTC heads on frozen features (SUPERB "PR" style).

For every layer ``l`` a linear map ``logits = z_l @ W_l + b_l`` with ``W_l: [D, C+1]`` is
trained with the CTC loss (Graves et al., ICML 2006) to emit the phone sequence of each
utterance; the phone error rate of its greedy transcripts on held-out utterances says how
linearly *decodable* the phone sequence is in that layer (SUPERB, Yang et al., Interspeech
2021, task PR; there the head is also linear).

The heads are a ``bank.Problem`` (:func:`ctc_problem`) trained by ``train.fit_layer_chunks``
like every other estimator: all layers x learning rates in one jitted minibatch-Adam
``fori_loop``, sharded over the devices, with dev selection, Orbax checkpoints and resume.
This module holds only what is CTC's own.

Conventions (the one place that states them):

* **Blank = index 0**; phone id ``c`` (0..C-1, the package's phone set) is head output ``c+1``.
* **Targets** (:func:`ctc_targets`): the utterance's phone sequence with runs of the same
  phone merged (aligners split one phone into adjacent segments, frame labels repeat it for
  every frame) and silence / unlabelled entries removed afterwards. A phone repeated across a
  pause (``s sil s``) therefore stays two phones, so targets may hold adjacent repeats, which
  CTC handles with a blank between them.
* **Items** are rows of frames (:func:`packing`). Training: one utterance a row; its length
  falls in one of ``num_buckets`` bucket lengths T_b (the least padding, :func:`bucket_lengths`).
  A step draws a minibatch stratified by length, m_b utterances of every bucket b with m_b
  U_b's share of ``batch_size`` (:func:`bucket_batches`), each bucket reshuffled every epoch of
  its own (:func:`stratified_rows`), and computes each bucket's rows at their own length T_b,
  not at the longest: one compiled step holding one CTC loss per bucket. (Steps on one bucket
  at a time would pad as little, but every minibatch would then hold one length only, not a
  uniform minibatch's mix.) Dev and test: utterances back to back in rows of F frames
  (:func:`pack_rows`), evaluated by one program whatever their lengths. Fields: features
  ``x [L, G, F, D]``; per slot its first frame ``starts``, frame count ``lengths``, labels
  (phone id + 1) and label count ``llen``; weight ``w [G]`` = the row's reference phones. On
  the bundled corpus (the demo's 400 steps) 11 % of the frames a run processes are padding,
  against 47 % (log-mel) and 49 % (Whisper tiny.en) with every utterance padded to the
  longest; Whisper tiny.en's PERs stayed within the padded layout's intervals at every layer
  (BENCHMARKS.md, "Linear-CTC bank"). Features are standardised per layer and dimension with
  the training frames' statistics (so one learning-rate grid suits layers of any scale) and
  held in float16.
* **Loss** (training): summed CTC loss of the step's utterances per reference phone, bucket
  b's utterances (and phones) weighted by U_b sum(m) / (U m_b): m_b is rounded, and the
  weights make the loss a uniform minibatch's in expectation.
  **Evaluation**: per row, the edit distances of its greedy transcripts ("edits", per slot)
  and ``loss = edits / reference phones``; the w-weighted mean of ``loss`` is the PER, so the
  bank's dev selection (per layer, over learning rates and eval steps, step 0 included:
  the all-blank head, PER 100 %) is by dev PER.
* **PER** = 100 x (total Levenshtein distance between greedy hypotheses and references) /
  (total reference length), in percent. Greedy decoding takes the per-frame argmax, collapses
  repeats, then drops blanks. The CI is a percentile bootstrap over test utterances (the ratio
  of resampled sums, ``bootstrap.ratio_ci``), with the same resamples for every layer.
* **Training runs** (``runs`` = R > 1): every head is trained R times, run r with seed
  ``seed + r`` (its own minibatch order and dev choice). The PER is the mean of the runs' PERs
  and its interval adds their spread to the test resampling (``bootstrap.with_run_spread``).
  At the demo's 400 steps one head's PER moves by up to ~11 points from one run to another
  while its test interval is 6-8 points wide (BENCHMARKS.md, "Training noise"): a comparison of
  PERs within that range needs R > 1.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speechmi_jax import frames
from speechmi_jax.estimators import api, bootstrap, validate
from speechmi_jax.estimators.bank import Grid, Problem
from speechmi_jax.estimators.train import DEFAULT_RESIDENT_BYTES, fit_layer_chunks, train_config

BLANK = 0
EVAL_ROW_LONGEST = 2  # a dev / test row holds the frames of this many longest utterances


# ----------------------------------------------------------------------------------------------
# Targets, decoding and edit distance.

def ctc_targets(labels, silence_id: int, ignore: int = frames.IGNORE) -> np.ndarray:
    """Phone sequence -> CTC target: runs merged, then silence and ``ignore`` removed.

    ``labels``: int [N], either one id per phone segment or one per frame (frame labels
    repeat each phone; merging the runs turns them into the segment sequence). Returns
    int32 [S] of phone ids (not shifted by the blank).
    """
    x = np.asarray(labels, dtype=np.int64).reshape(-1)
    if x.size == 0:
        return x.astype(np.int32)
    starts = np.concatenate([[True], x[1:] != x[:-1]])
    runs = x[starts]
    return runs[(runs != silence_id) & (runs != ignore)].astype(np.int32)


def levenshtein(a: Sequence[int], b: Sequence[int]) -> int:
    """Edit distance (substitutions, insertions, deletions, each cost 1); plain O(|a||b|) DP.

    The reference against which the vectorized :func:`edit_distance` is tested.
    """
    a, b = list(a), list(b)
    prev = list(range(len(b) + 1))
    for i, ai in enumerate(a, start=1):
        cur = [i] + [0] * len(b)
        for j, bj in enumerate(b, start=1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ai != bj))
        prev = cur
    return prev[-1]


def edit_distance(hyp, hyp_len, ref, ref_len):
    """Levenshtein distance of one padded pair, in JAX -> int32 scalar (vmap for batches).

    ``hyp: [H]``, ``ref: [S]`` int, valid lengths ``hyp_len``, ``ref_len``. Scans the DP over
    hypothesis positions; row ``i`` is ``D[i, j] = min(D[i-1, j] + 1, D[i-1, j-1] + [h_i !=
    r_j], D[i, j-1] + 1)``. The left-to-right insertion term is solved in one vector op:
    ``D[i, j] = j + cummin_k(T[k] - k)`` with ``T`` the row before insertions. Positions past
    ``ref_len`` only depend on earlier ones, so padding never leaks into the answer.
    """
    s = ref.shape[0]
    cols = jnp.arange(s + 1, dtype=jnp.int32)

    def step(row, inp):
        i, h = inp
        sub = row[:-1] + (h != ref).astype(jnp.int32)
        tmp = jnp.concatenate([i[None], jnp.minimum(row[1:] + 1, sub)])
        new = cols + jax.lax.cummin(tmp - cols)
        return jnp.where(i <= hyp_len, new, row), None

    steps = jnp.arange(1, hyp.shape[0] + 1, dtype=jnp.int32)
    row, _ = jax.lax.scan(step, cols, (steps, hyp.astype(jnp.int32)))
    return row[ref_len]


def greedy_decode(logits, mask):
    """Best-path CTC decoding -> (phone ids int32 [B, T] left-packed, lengths int32 [B]).

    ``logits: [B, T, C+1]`` (blank = 0), ``mask: [B, T]`` True on real frames. Collapses
    repeated argmax symbols, then drops blanks; returned ids are phone ids (blank shift undone).
    """
    return collapse_path(jnp.argmax(logits, axis=-1), mask)


def collapse_path(path, mask):
    """The transcript of a best path: ``path [B, T]`` per-frame head outputs (blank = 0), ``mask
    [B, T]`` True on real frames -> (phone ids int32 [B, T] left-packed, lengths int32 [B])."""
    pred = jnp.where(mask, path.astype(jnp.int32), BLANK)
    prev = jnp.pad(pred[:, :-1], ((0, 0), (1, 0)), constant_values=-1)
    keep = mask & (pred != BLANK) & (pred != prev)
    t = pred.shape[1]
    pos = jnp.where(keep, jnp.cumsum(keep, axis=1) - 1, t)
    rows = jnp.arange(pred.shape[0])[:, None]
    out = jnp.zeros_like(pred).at[rows, pos].set(pred - 1, mode="drop")
    return out, keep.sum(axis=1).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# Data.

@dataclasses.dataclass(frozen=True)
class CTCSplit:
    """One split of a feature cache, as the cache stores it.

    hidden:      [L+1, N, D] array-like (an ``np.memmap`` in float16 is fine): all frames of
                 all utterances, utterance ``u`` at frames ``utt_offsets[u]:utt_offsets[u+1]``.
    utt_offsets: int [U+1].
    targets:     U int arrays of phone ids (see :func:`ctc_targets`), or None for utterances
                 never selected.
    utts:        indices of the utterances that form this split (default: all U), so train,
                 dev and test can share one cache.
    name:        used in error messages.
    """

    hidden: object
    utt_offsets: np.ndarray
    targets: Sequence[Optional[np.ndarray]]
    utts: Optional[np.ndarray] = None
    name: str = "split"


def splits_from_features(features, *, train: str = "train", dev="dev", test: str = "test",
                         targets: Optional[Sequence[np.ndarray]] = None,
                         silence: str = "sil", seed: int = 0) -> tuple[CTCSplit, CTCSplit, CTCSplit]:
    """(train, dev, test) :class:`CTCSplit` views of a feature cache (``features.FeatureSet``).

    Uses ``features.hidden [L+1, N, D]``, ``utt_offsets [U+1]``, ``splits [U]``. ``targets``
    (U phone-id arrays, e.g. :func:`ctc_targets` of each utterance's phone *segments*)
    default to :func:`ctc_targets` of the cached frame labels ``features.phone`` -- which
    miss a phone shorter than one frame, so PERs of encoders with different frame rates
    compare best with segment targets. ``dev`` names a split, or is a fraction: that share
    of the training utterances (seeded, ``api.dev_from_train``) becomes the dev split.
    """
    offsets = np.asarray(features.utt_offsets)
    splits = np.asarray(features.splits)
    if targets is None:
        sil = list(features.phone_set).index(silence)
        targets = [ctc_targets(features.phone[offsets[u]:offsets[u + 1]], sil)
                   for u in range(offsets.size - 1)]

    def rows(name):
        r = np.flatnonzero(splits == name)
        if r.size == 0:
            raise KeyError(f"feature cache {getattr(features, 'path', '')}: no split {name!r}; "
                           f"splits are {sorted(set(splits.tolist()))}")
        return r

    tr, te = rows(train), rows(test)
    if isinstance(dev, str):
        dv = rows(dev)
    else:
        codes = np.full(splits.size, -1, np.int8)
        codes[tr], codes[te] = 0, 2
        utt = np.arange(splits.size)
        codes[codes >= 0] = api.dev_from_train(codes[codes >= 0], utt[codes >= 0], float(dev), seed)
        tr, dv = np.flatnonzero(codes == 0), np.flatnonzero(codes == 1)
    make = lambda name, r: CTCSplit(features.hidden, offsets, targets, r, name)
    return make(train, tr), make(dev if isinstance(dev, str) else "dev", dv), make(test, te)


# ----------------------------------------------------------------------------------------------
# Packing: a split -> the bank's data dict of rows of utterances.

@dataclasses.dataclass
class _Layout:
    """Where a split's utterances lie in the cache and what they must emit."""

    frame_idx: np.ndarray    # [N_s] cache frame of each of the split's frames, utterance by utterance
    lengths: np.ndarray      # [U_s] frames per utterance
    targets: list            # U_s int32 arrays (phone ids)


def _layout(split: CTCSplit, num_phones: int) -> _Layout:
    offsets = np.asarray(split.utt_offsets, dtype=np.int64)
    hidden = split.hidden
    if getattr(hidden, "ndim", None) != 3:
        raise ValueError(f"{split.name}: hidden must be [L+1, N, D], got shape "
                         f"{getattr(hidden, 'shape', None)}")
    if offsets.ndim != 1 or offsets[0] != 0 or offsets[-1] != hidden.shape[1] \
            or np.any(np.diff(offsets) < 0):
        raise ValueError(f"{split.name}: utt_offsets must rise from 0 to N={hidden.shape[1]} "
                         f"frames, got {offsets[:3]}...{offsets[-3:]} ({offsets.size} entries)")
    if len(split.targets) != offsets.size - 1:
        raise ValueError(f"{split.name}: {len(split.targets)} targets for "
                         f"{offsets.size - 1} utterances in utt_offsets")
    utts = np.arange(offsets.size - 1) if split.utts is None else np.asarray(split.utts)
    if utts.size == 0:
        raise ValueError(f"{split.name}: no utterances selected")
    lengths = offsets[utts + 1] - offsets[utts]
    targets = []
    for u, n in zip(utts, lengths):
        tgt = split.targets[u]
        if tgt is None:
            raise ValueError(f"{split.name}: utterance {u} has no target")
        tgt = np.asarray(tgt, dtype=np.int32)
        if tgt.size and (tgt.min() < 0 or tgt.max() >= num_phones):
            raise ValueError(f"{split.name}: utterance {u} target ids must lie in "
                             f"[0, {num_phones}), got [{tgt.min()}, {tgt.max()}]")
        # CTC needs a frame per label plus a blank between equal neighbours.
        need = tgt.size + int(np.sum(tgt[1:] == tgt[:-1]))
        if n < need:
            raise ValueError(f"{split.name}: utterance {u} has {n} frames but its {tgt.size}-phone "
                             f"target needs at least {need} for CTC")
        targets.append(tgt)
    if sum(t.size for t in targets) == 0:
        raise ValueError(f"{split.name}: no reference phones in any utterance: a PER needs some")
    idx = np.concatenate([np.arange(offsets[u], offsets[u + 1]) for u in utts])
    return _Layout(idx, lengths, targets)


def _round_up(n, m):
    return int(math.ceil(max(n, 1) / m) * m)


def bucket_lengths(lengths, num_buckets: int, multiple: int = 8) -> tuple[int, ...]:
    """The padded lengths ``T_1 < ... < T_k`` (k <= ``num_buckets``, multiples of ``multiple``,
    ``T_k`` >= the longest) that minimise the total padding ``sum_u (T_b(u) - len_u)`` when
    every utterance is padded to the smallest ``T_b`` >= its length.

    ``lengths``: int [U]. Exact, by dynamic programming over the m candidate lengths (the
    multiples of ``multiple`` from the shortest utterance's to the longest's): ``best[n, j]``
    = the least padding of the utterances no longer than candidate j with n + 1 lengths, the
    largest being candidate j; O(num_buckets * m^2) (m ~ 25 for the bundled corpus at 50 Hz).
    """
    if num_buckets < 1:
        raise ValueError(f"num_buckets must be >= 1, got {num_buckets}")
    ls = np.sort(np.asarray(lengths, np.int64).reshape(-1))
    cand = np.arange(_round_up(ls[0], multiple), _round_up(ls[-1], multiple) + 1, multiple)  # [m]
    m = cand.size
    upto = np.searchsorted(ls, cand, side="right")                 # [m] utterances <= cand[j]
    frames = np.concatenate([[0], np.cumsum(ls)])[upto]             # [m] their frames
    # pad[i, j] (i < j): padding of the lengths in (cand[i], cand[j]] padded to cand[j]
    pad = (upto[None] - upto[:, None]) * cand[None] - (frames[None] - frames[:, None])  # [m, m]
    pad = np.where(np.arange(m)[:, None] < np.arange(m)[None], pad, np.iinfo(np.int64).max // 4)
    best = [upto * cand - frames]                                   # one length, cand[j]
    back = []
    for _ in range(1, min(num_buckets, m)):
        total = best[-1][:, None] + pad                             # [i, j]
        back.append(np.argmin(total, axis=0))
        best.append(total[back[-1], np.arange(m)])
    n = int(np.argmin([b[m - 1] for b in best]))                   # the fewest at the least padding
    out, j = [int(cand[m - 1])], m - 1
    for step in range(n, 0, -1):
        j = int(back[step - 1][j])
        out.append(int(cand[j]))
    return tuple(sorted(out))


def bucket_batches(lengths, buckets: Sequence[int], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per bucket b: its utterances U_b and how many of them a training step draws, m_b.

    Each utterance belongs to the smallest bucket length ``T_b = buckets[b]`` >= its length.
    m_b is bucket b's share of ``batch_size``, U_b batch_size / U, rounded so that every m_b is
    at least 1 and they add up to ``batch_size``: from max(1, floor), a step is added where the
    share exceeds m_b most, or taken where m_b > 1 exceeds it most, until they do. A step's
    minibatch is thus stratified by length, every utterance drawn about batch_size / U times a
    step as from uniform minibatches (the loss's weights undo the rounding). ``lengths`` int
    [U], each <= ``buckets[-1]``; every bucket must hold one; k <= ``batch_size`` <= U.
    Returns (U_b, m_b), int [k] each.
    """
    counts = np.bincount(np.searchsorted(buckets, np.asarray(lengths)), minlength=len(buckets))
    if not counts.all():
        raise ValueError(f"buckets {tuple(buckets)}: bucket(s) {np.flatnonzero(counts == 0).tolist()} "
                         f"hold no utterance")
    if not len(buckets) <= batch_size <= counts.sum():
        raise ValueError(f"batch_size {batch_size}: a step draws one utterance or more of each of "
                         f"{len(buckets)} buckets, of {counts.sum()} utterances")
    want = counts * batch_size / counts.sum()
    per_step = np.maximum(np.floor(want).astype(np.int64), 1)
    while per_step.sum() < batch_size:   # some m_b < want_b <= U_b: room for one more
        per_step[np.argmax(want - per_step)] += 1
    while per_step.sum() > batch_size:   # only from the 1s: some m_b > 1 has m_b <= want_b
        per_step[np.argmax(np.where(per_step > 1, per_step - want, -np.inf))] -= 1
    return counts, per_step


def stratified_rows(counts: Sequence[int], per_step: Sequence[int], key, step):
    """The rows of a training step's minibatch -> int [sum m_b], bucket by bucket.

    Rows are bucket-major (bucket b's U_b utterances at rows ``off_b .. off_b + U_b - 1``). Bucket
    b gives positions [step m_b, (step + 1) m_b) of its stream of epochs, each epoch a fresh
    permutation of its utterances (``fold_in(fold_in(key, b), epoch)``): every utterance of the
    bucket once every U_b / m_b steps, and a function of (key, step) alone, so resume replays it.
    ``counts``, ``per_step``: U_b and m_b (:func:`bucket_batches`; m_b <= U_b).
    """
    out, off = [], 0
    for b, (u, m) in enumerate(zip(counts, per_step)):
        pos = step * m + jnp.arange(m)
        epoch, i = pos // u, pos % u   # m <= u: the m positions span at most two epochs
        perm = lambda e: jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, b), e), u)
        out.append(off + jnp.where(epoch == epoch[0], perm(epoch[0])[i], perm(epoch[0] + 1)[i]))
        off += u
    return jnp.concatenate(out)


def pack_rows(lengths, row_frames: int) -> list[np.ndarray]:
    """Evaluation utterances -> rows of ``row_frames`` frames, back to back: [utterance
    positions in row order]. First-fit decreasing: the longest utterance left goes into the
    first row with room for it (a new row if none has). ``lengths`` int [U], each <=
    ``row_frames``."""
    lengths = np.asarray(lengths)
    free = np.zeros(0, np.int64)                                    # [R] frames left per row
    rows: list[list[int]] = []
    for u in np.argsort(-lengths, kind="stable"):
        fits = np.flatnonzero(free >= lengths[u])
        r = int(fits[0]) if fits.size else len(rows)
        if r == len(rows):
            rows.append([])
            free = np.append(free, row_frames)
        rows[r].append(int(u))
        free[r] -= lengths[u]
    return [np.asarray(r) for r in rows]


@dataclasses.dataclass
class _Packing:
    """A split in G rows of F frames: each utterance's row, slot and first frame there."""

    row: np.ndarray                 # [U_s] row of each utterance
    slot: np.ndarray                # [U_s] its slot in the row
    start: np.ndarray               # [U_s] its first frame in the row
    frames: int                     # F
    slots: int                      # B, the most utterances a row holds

    @property
    def num_rows(self) -> int:
        return int(self.row.max()) + 1

    def dest(self, lengths: np.ndarray) -> np.ndarray:
        """[N_s] flat index (g F + start + t) of each of the split's frames, utterance by utterance."""
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        return np.repeat(self.row * self.frames + self.start, lengths) + within


def _place(rows, lengths, starts_of, frames: int) -> _Packing:
    """The _Packing of ``rows`` (utterance positions per row); ``starts_of(members)``: their
    first frames in their row."""
    row, slot, start = (np.zeros(len(lengths), np.int64) for _ in range(3))
    for g, members in enumerate(rows):
        row[members], slot[members] = g, np.arange(members.size)
        start[members] = starts_of(members)
    return _Packing(row, slot, start, frames, max(m.size for m in rows))


def _train_packing(lay: _Layout, buckets: Sequence[int]) -> _Packing:
    """The training split one utterance a row of ``buckets[-1]`` frames, bucket-major (by bucket,
    then by position: the rows :func:`stratified_rows` draws from)."""
    member = np.searchsorted(buckets, lay.lengths)
    rows = [np.array([u]) for u in np.argsort(member, kind="stable")]
    return _place(rows, lay.lengths, lambda m: 0, buckets[-1])


def _row_packing(lay: _Layout, row_frames: int) -> _Packing:
    """An evaluation split in rows of ``row_frames`` frames (:func:`pack_rows`), back to back."""
    return _place(pack_rows(lay.lengths, row_frames), lay.lengths,
                  lambda m: np.cumsum(lay.lengths[m]) - lay.lengths[m], row_frames)


def _fields(lay: _Layout, pack: _Packing) -> dict:
    """The split's shared fields, per row g and slot i: starts [G, B] and lengths [G, B] in
    frames (0 on an empty slot), labels [G, B, S] (phone id + 1) with their lengths llen [G, B],
    w [G] = the row's reference phones."""
    g, b = pack.num_rows, pack.slots
    s = _round_up(max(t.size for t in lay.targets), 8)
    starts, lengths, llen = (np.zeros((g, b), np.int32) for _ in range(3))
    labels = np.zeros((g, b, s), np.int32)
    for u, tgt in enumerate(lay.targets):
        at = pack.row[u], pack.slot[u]
        starts[at], lengths[at], llen[at] = pack.start[u], lay.lengths[u], tgt.size
        labels[at][:tgt.size] = tgt + 1
    return {"starts": starts, "lengths": lengths, "labels": labels, "llen": llen,
            "w": llen.sum(1).astype(np.float32)}


def _layer_frames(split: CTCSplit, layer: int, lay: _Layout) -> np.ndarray:
    """float32 [1, N_s, D]: the split's frames of one cached layer (a writable copy)."""
    x = np.asarray(split.hidden[layer][lay.frame_idx], np.float32)[None]
    if not x.flags.writeable:  # e.g. a read-only view of a jax array's buffer
        x = x.copy()
    validate.finite(f"{split.name} hidden", split.hidden.shape, x, layer, lay.frame_idx)
    return x


def _padded_splits(splits, lays, packs, layers) -> list[np.ndarray]:
    """float16 [l, G, F, D] per split: the utterance in slot i of row g at frames [start, start +
    len) of row g, standardised, zeros elsewhere. Built layer by layer (one layer's frames of all
    splits in memory at a time)."""
    dim = splits[0].hidden.shape[2]
    out = [np.zeros((len(layers), p.num_rows, p.frames, dim), np.float16) for p in packs]
    dests = [p.dest(l.lengths) for p, l in zip(packs, lays)]
    for i, layer in enumerate(layers):
        xs = api.standardize_splits(*(_layer_frames(s, int(layer), l) for s, l in zip(splits, lays)),
                                    in_place=True)
        for o, x, d in zip(out, xs, dests):
            o[i].reshape(-1, dim)[d] = x[0]
    return out


# ----------------------------------------------------------------------------------------------
# The bank problem. Shapes for one estimator: G rows of F frames, D dims, K = C+1 outputs, B
# slots a row; a training step takes m_b rows of each bucket b, their first T_b frames.

def init_head(key, in_dims, blank_bias: float = 0.0):
    """W [D, K] zeros, b [K] zeros except b[blank] = blank_bias. With blank_bias >= 0 every
    frame's argmax is the blank, so the initial transcripts are empty: PER 100 %, dev
    selection's step-0 candidate."""
    d, k = in_dims
    return {"w": jnp.zeros((d, k), jnp.float32),
            "b": jnp.zeros((k,), jnp.float32).at[BLANK].set(blank_bias)}


def head_logits(params, x):
    """x [B, T, D] (any float dtype) -> logits [B, T, K] in float32."""
    return x.astype(jnp.float32) @ params["w"] + params["b"]


def _bucket_loss(t: int, s: int, params, rows: dict):
    """Summed CTC loss of training rows of one bucket of frame and label lengths (T_b, S_b) =
    (t, s): x [m, t, D] (a row's first t frames), labels [m, s]."""
    mask = jnp.arange(t) < rows["lengths"][:, :1]                               # [m, t]
    lmask = jnp.arange(s) < rows["llen"][:, :1]                                 # [m, s]
    per_seq = optax.ctc_loss(head_logits(params, rows["x"][:, :t]), (~mask).astype(jnp.float32),
                             rows["labels"][:, 0, :s], (~lmask).astype(jnp.float32), blank_id=BLANK)
    return jnp.sum(jnp.where(mask.any(-1), per_seq, 0.0))


def _slot_paths(path, data: dict, max_len: int):
    """Per-frame head outputs of rows ``path [G, F]`` -> each slot's best path and frame mask,
    ``[G, B, max_len]``, read at the slot's ``starts`` (clipped to frame 0 past its length)."""
    t = jnp.arange(max_len)
    mask = t < data["lengths"][..., None]                                        # [G, B, H]
    idx = jnp.where(mask, data["starts"][..., None] + t, 0)
    out = jnp.take_along_axis(path, idx.reshape(idx.shape[0], -1), axis=1)
    return out.reshape(mask.shape), mask


@functools.lru_cache(maxsize=None)
def ctc_problem(num_phones: int, blank_bias: float, buckets: tuple, counts: tuple, max_len: int) -> Problem:
    """The bank Problem of a linear CTC head over `num_phones` phones (head width C+1) on rows of
    utterances (see the module docstring). ``buckets``: ((T_b, S_b, m_b), ...) the frame and
    label lengths of each training bucket and the utterances a step draws from it; ``counts``:
    its utterances U_b (the training rows, bucket-major); ``max_len``: the longest held-out
    utterance.

    A training step draws m_b rows of every bucket (:func:`stratified_rows`) and runs the head
    and the CTC loss on each bucket's rows at its own length T_b: one program, a CTC loss per
    bucket in it. Evaluation runs the head's argmax on all F frames of every held-out row, then
    gathers each slot's path at its offsets, ``max_len`` long."""

    # Bucket b is drawn at m_b / U_b a step where uniform minibatches draw sum(m) / U: its rows
    # weigh U_b sum(m) / (U m_b), so the loss is the uniform minibatch's in expectation.
    weight = [u * sum(m for _, _, m in buckets) / (sum(counts) * m) for (_, _, m), u in zip(buckets, counts)]

    def loss(params, batch):  # batch: the step's draw, m_b rows of each bucket b in turn
        total, phones, start = 0.0, 0.0, 0
        for (t, s, m), c in zip(buckets, weight):
            rows = {k: v[start:start + m] for k, v in batch.items()}
            total += c * _bucket_loss(t, s, params, rows)
            phones += c * jnp.sum(rows["w"])
            start += m
        return total / jnp.maximum(phones, 1.0)

    def draw(key, step, n_train, batch_size):
        if batch_size != sum(m for _, _, m in buckets) or n_train != sum(counts):
            raise ValueError(f"ctc_linear: {batch_size} rows of {n_train} drawn, expected "
                             f"{sum(m for _, _, m in buckets)} of {sum(counts)}")
        return stratified_rows(counts, [m for _, _, m in buckets], key, step)

    def evaluate(params, data):  # data: G rows
        pred = jnp.argmax(head_logits(params, data["x"]), axis=-1)                 # [G, F]
        path, mask = _slot_paths(pred, data, max_len)
        g, b, h = path.shape
        hyp, hyp_len = collapse_path(path.reshape(g * b, h), mask.reshape(g * b, h))
        edits = jax.vmap(edit_distance)(hyp, hyp_len, data["labels"].reshape(g * b, -1) - 1,
                                        data["llen"].reshape(-1)).reshape(g, b).astype(jnp.float32)
        return {"loss": edits.sum(-1) / jnp.maximum(data["llen"].sum(-1), 1), "edits": edits}

    return Problem(name="ctc_linear", init=functools.partial(init_head, blank_bias=blank_bias),
                   loss=loss, evaluate=evaluate, layer_fields=("x",),
                   config=("linear", num_phones, blank_bias, buckets, counts, max_len), draw=draw,
                   shard_minibatch=False)


# ----------------------------------------------------------------------------------------------
# Public entry point.

@dataclasses.dataclass(frozen=True)
class Packing:
    """How the three splits are laid out (:func:`packing`), and what it costs in padding.

    buckets:   ((T_b, S_b, m_b), ...) per training bucket: its frame and label lengths, and the
               utterances a step draws from it (a CTC loss at that shape in the one step).
    counts:    its training utterances U_b.
    frames, rows: per split (train, dev, test): the frames of a row and the rows (training: one
               utterance a row of T_k frames; held out: utterances back to back).
    real, processed: training: a step's real frames (expected: sum of m_b x bucket b's mean
               length) and the frames it computes on (sum of m_b T_b); dev and test: a pass's.
    padding_share: padding's share of the frames a run of ``num_steps`` processes: ``num_steps``
               training steps, dev at every evaluation, test once. ``longest_share``: the same
               with every utterance padded to the longest one and ``batch_size`` of them per
               step (the layout before buckets).
    """

    buckets: tuple
    counts: tuple
    frames: tuple
    rows: tuple
    real: tuple
    processed: tuple
    padding_share: float
    longest_share: float


def _plan(lays, batch_size: int, num_buckets: int, num_steps: int, eval_every: int):
    """(Packing, per-split _Packing, max_len) of the (train, dev, test) layouts; see :func:`packing`."""
    train = lays[0]
    t = bucket_lengths(train.lengths, min(num_buckets, batch_size))  # a step draws from each
    counts, per_step = bucket_batches(train.lengths, t, batch_size)
    member = np.searchsorted(t, train.lengths)                            # [U_train] bucket
    labels = [_round_up(max(train.targets[u].size for u in np.flatnonzero(member == b)), 8)
              for b in range(len(t))]
    max_len = _round_up(max(int(l.lengths.max()) for l in lays[1:]), 8)
    packs = [_train_packing(train, t), *(_row_packing(l, EVAL_ROW_LONGEST * max_len) for l in lays[1:])]
    mean = np.array([train.lengths[member == b].mean() for b in range(len(t))])
    real = np.array([per_step @ mean, *(l.lengths.sum() for l in lays[1:])])
    processed = np.array([per_step @ np.asarray(t), *(p.frames * p.num_rows for p in packs[1:])])
    every = min(eval_every, num_steps)                # as train.train_config and fit_bank run them
    steps = -(-num_steps // every) * every
    passes = np.array([steps, steps // every + 1, 1])  # steps; dev at every evaluation; test once
    longest = _round_up(max(int(l.lengths.max()) for l in lays), 16)
    before = np.array([batch_size * longest, *(l.lengths.size * longest for l in lays[1:])])
    real_before = np.array([batch_size * train.lengths.mean(), *real[1:]])
    share = lambda r, p: float(1 - (passes * r).sum() / (passes * p).sum())
    plan = Packing(tuple(zip(t, labels, map(int, per_step))), tuple(map(int, counts)),
                   tuple(p.frames for p in packs), tuple(p.num_rows for p in packs),
                   tuple(float(r) for r in real), tuple(map(int, processed)),
                   share(real, processed), share(real_before, before))
    return plan, packs, max_len


def packing(train: CTCSplit, dev: CTCSplit, test: CTCSplit, *, num_phones: int, batch_size: int = 16,
            num_buckets: int = 5, num_steps: int = 1000, eval_every: int = 200) -> Packing:
    """The layout :func:`ctc_per_bank` trains and evaluates on (same arguments), without
    training: training utterances in ``num_buckets`` lengths (:func:`bucket_lengths`), a step
    drawing m_b of each (:func:`bucket_batches`); dev and test utterances back to back in rows
    of ``EVAL_ROW_LONGEST`` x the longest one's frames (:func:`pack_rows`)."""
    lays = [_layout(s, num_phones) for s in (train, dev, test)]
    return _plan(lays, batch_size, num_buckets, num_steps, eval_every)[0]


@dataclasses.dataclass
class CTCLayerResult:
    """PER of one layer's selected head: ``per`` and its ``ci`` in percent; ``lr`` and
    ``step`` the learning rate and stopping step chosen on dev, where the head reached
    ``dev_per`` (``dev_per_by_lr``: the best dev PER of every learning rate). With several
    training runs: ``per`` is their mean and ``ci`` carries their spread; ``run_pers`` the
    runs' PERs, ``run_choices`` each run's (lr, step); ``lr``, ``step``, ``dev_per`` and
    ``dev_per_by_lr`` are the first run's; ``utt_edits`` the mean over runs."""

    layer: int
    per: float
    ci: tuple
    lr: float
    step: int
    dev_per: float
    dev_per_by_lr: dict
    num_test_utts: int
    num_test_phones: int
    utt_edits: np.ndarray = dataclasses.field(repr=False)      # [U_test]
    utt_ref_lengths: np.ndarray = dataclasses.field(repr=False)  # [U_test]
    run_pers: tuple = ()
    run_choices: tuple = ()


def ctc_per_bank(
    train: CTCSplit,
    dev: CTCSplit,
    test: CTCSplit,
    *,
    num_phones: int,
    layers: Optional[Sequence[int]] = None,
    learning_rates: Sequence[float] = (1e-3, 1e-2),
    num_steps: int = 1000,
    batch_size: int = 16,
    num_buckets: int = 5,
    eval_every: int = 200,
    blank_bias: float = 0.0,
    seed: int = 0,
    runs: int = 1,
    num_bootstrap: int = 1000,
    ci_level: float = 0.95,
    checkpoint_dir=None,
    checkpoint_every: Optional[int] = None,
    mesh_shape=None,
    devices=None,
    layer_chunk: Optional[int] = None,
    max_resident_bytes: int = DEFAULT_RESIDENT_BYTES,
) -> list[CTCLayerResult]:
    """Trains linear CTC heads for all ``layers`` x ``learning_rates`` at once -> PER per layer.

    ``num_phones`` C is the size of the phone set (head width C+1, blank 0). ``layers``
    indexes the caches' first axis (default: all). Minibatch Adam on ``batch_size`` training
    utterances a step, stratified by length over ``num_buckets`` padded lengths (at most
    ``batch_size``: a step draws from each; :func:`packing`;
    each bucket's loss at its own length) and drawn by reshuffled epochs of each bucket (a
    function of ``seed`` and the step); dev PER is measured every ``eval_every`` steps
    (``num_steps`` is rounded up to a multiple of it).
    ``blank_bias``: initial blank logit (0 = all outputs equal). ``checkpoint_dir`` /
    ``checkpoint_every``, ``mesh_shape`` / ``devices``, ``layer_chunk`` /
    ``max_resident_bytes``: as for ``api.probe_bank`` (a chunk of layers never changes the
    results, it bounds the memory holding the features), except that a training minibatch is
    not split over the "data" devices (each computes the whole step, whose buckets a split
    would cut across devices; held-out rows are split). ``runs``: training runs per head
    (seeds ``seed`` .. ``seed + runs - 1``; run r > 0 checkpoints in ``run{r}/`` under
    ``checkpoint_dir``), see the module docstring. Returns one :class:`CTCLayerResult` per
    layer, in ``layers`` order.
    """
    num_layers = train.hidden.shape[0]
    layers = np.arange(num_layers) if layers is None else np.asarray(layers, dtype=np.int64)
    for s in (dev, test):
        if s.hidden.shape[0] != num_layers or s.hidden.shape[2] != train.hidden.shape[2]:
            raise ValueError(f"{s.name}: hidden shape {s.hidden.shape} does not match "
                             f"{train.name}'s {train.hidden.shape} in layers or dims")
    if layers.size == 0 or np.any(layers < 0) or np.any(layers >= num_layers):
        raise ValueError(f"layers {layers.tolist()} out of range for {num_layers} cached layers")
    if num_steps < 1 or eval_every < 1 or batch_size < 1 or runs < 1:
        raise ValueError("num_steps, eval_every, batch_size and runs must be >= 1")
    splits = (train, dev, test)
    lays = [_layout(s, num_phones) for s in splits]
    if lays[0].lengths.size < batch_size:
        raise ValueError(f"{train.name}: {lays[0].lengths.size} utterances < batch_size {batch_size}")
    # Training rows drawn m_b per bucket, each bucket's CTC loss at its own length, held-out rows
    # of one shape: one compile of the step and one of the evaluation.
    plan, packs, max_len = _plan(lays, batch_size, num_buckets, num_steps, eval_every)
    shared = [_fields(l, p) for l, p in zip(lays, packs)]
    dim = train.hidden.shape[2]

    def load(chunk):
        xs = _padded_splits(splits, lays, packs, layers[chunk])
        return [{"x": x, **f} for x, f in zip(xs, shared)]

    grid = Grid.product(learning_rates)
    test_lengths = np.array([t.size for t in lays[2].targets], np.int64)    # [U_test]
    per = lambda edits: 100.0 * float(np.sum(edits)) / float(test_lengths.sum())

    def collect(res, j, layer):
        edits = np.rint(res.test["edits"][j][packs[2].row, packs[2].slot]).astype(np.int64)
        g = int(res.choice[j])
        return CTCLayerResult(
            layer=int(layer), per=per(edits), ci=(math.nan, math.nan),
            lr=grid.lr[g], step=int(res.step[j]), dev_per=100.0 * float(res.dev_loss[j, g]),
            dev_per_by_lr={lr: 100.0 * float(res.dev_loss[j, p]) for p, lr in enumerate(grid.lr)},
            num_test_utts=int(test_lengths.size), num_test_phones=int(test_lengths.sum()),
            utt_edits=edits, utt_ref_lengths=test_lengths)

    bytes_per_layer = 2 * dim * sum(f * g for f, g in zip(plan.frames, plan.rows))
    problem = ctc_problem(num_phones, float(blank_bias), plan.buckets, plan.counts, max_len)
    by_run = []
    for r in range(runs):
        where = checkpoint_dir
        if checkpoint_dir is not None and r > 0:
            where = Path(checkpoint_dir) / f"run{r}"
        config = train_config("adam", num_steps, sum(m for _, _, m in plan.buckets), eval_every,
                              checkpoint_dir=where, checkpoint_every=checkpoint_every,
                              mesh_shape=mesh_shape, devices=devices, seed=seed + r)
        by_run.append(fit_layer_chunks(problem, grid, config, layers.size, load, collect,
                                       (dim, num_phones + 1), bytes_per_layer=bytes_per_layer,
                                       layer_chunk=layer_chunk, max_resident_bytes=max_resident_bytes,
                                       checkpoint_dir=where, layer_ids=layers))

    def combine(results):  # one layer's runs
        if runs == 1:
            edits, extra = results[0].utt_edits, {}
        else:
            edits = np.mean([res.utt_edits for res in results], axis=0)     # [U_test]
            extra = dict(run_pers=tuple(res.per for res in results),
                         run_choices=tuple((res.lr, res.step) for res in results))
        lo, hi = bootstrap.ratio_ci(edits, test_lengths, level=ci_level,
                                    num_replicates=num_bootstrap, seed=seed)
        point = per(edits)
        ci = bootstrap.with_run_spread(point, (100.0 * float(lo), 100.0 * float(hi)),
                                       extra.get("run_pers", ()), ci_level)
        return dataclasses.replace(results[0], per=point, ci=ci, utt_edits=edits, **extra)

    return [combine(results) for results in zip(*by_run)]
