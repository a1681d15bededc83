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
* **Items** are utterances: features ``x [L, U, T, D]`` (frames left-aligned, zero padded to
  one T for all splits), frame mask ``[U, T]``, labels ``[U, S]`` (phone id + 1) with their
  mask, and weight ``w [U]`` = the reference length. Features are standardised per layer and
  dimension with the training frames' statistics (so one learning-rate grid suits layers of
  any scale) and held in float16.
* **Loss** (training): summed CTC loss of the batch's utterances per reference phone.
  **Evaluation**: per utterance, the edit distance of the greedy transcript ("edits") and
  ``loss = edits / reference length``; the w-weighted mean of ``loss`` is the PER, so the
  bank's dev selection (per layer, over learning rates and eval steps, step 0 included:
  the all-blank head, PER 100 %) is by dev PER.
* **PER** = 100 x (total Levenshtein distance between greedy hypotheses and references) /
  (total reference length), in percent. Greedy decoding takes the per-frame argmax, collapses
  repeats, then drops blanks. The CI is a percentile bootstrap over test utterances (the ratio
  of resampled sums, ``bootstrap.ratio_ci``), with the same resamples for every layer.
"""

from __future__ import annotations

import dataclasses
import functools
import math
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
    pred = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    pred = jnp.where(mask, pred, BLANK)
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
# Packing: a split -> the bank's per-utterance data dict.

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


def _fields(lay: _Layout, t_pad: int, s_pad: int) -> dict:
    """The split's shared fields: mask [U, T], labels [U, S] (+1 shift), lmask [U, S], w [U]."""
    u = lay.lengths.size
    mask = np.arange(t_pad)[None, :] < lay.lengths[:, None]
    labels = np.zeros((u, s_pad), np.int32)
    lmask = np.zeros((u, s_pad), bool)
    for i, tgt in enumerate(lay.targets):
        labels[i, :tgt.size] = tgt + 1
        lmask[i, :tgt.size] = True
    return {"mask": mask, "labels": labels, "lmask": lmask, "w": lmask.sum(1).astype(np.float32)}


def _layer_frames(split: CTCSplit, layer: int, lay: _Layout) -> np.ndarray:
    """float32 [1, N_s, D]: the split's frames of one cached layer (a writable copy)."""
    x = np.asarray(split.hidden[layer][lay.frame_idx], np.float32)[None]
    if not x.flags.writeable:  # e.g. a read-only view of a jax array's buffer
        x = x.copy()
    validate.finite(f"{split.name} hidden", split.hidden.shape, x, layer, lay.frame_idx)
    return x


def _padded_splits(splits, lays, masks, layers) -> list[np.ndarray]:
    """float16 [l, U, T, D] per split: utterance u's standardised frames at [:, u, :len_u], zeros
    after. Built layer by layer (one layer's frames of all splits in memory at a time)."""
    dim = splits[0].hidden.shape[2]
    out = [np.zeros((len(layers),) + m.shape + (dim,), np.float16) for m in masks]
    for i, layer in enumerate(layers):
        xs = api.standardize_splits(*(_layer_frames(s, int(layer), l) for s, l in zip(splits, lays)),
                                    in_place=True)
        for o, x, m in zip(out, xs, masks):
            o[i][m] = x[0]
    return out


# ----------------------------------------------------------------------------------------------
# The bank problem. Shapes for one estimator: B utterances, T frames, D dims, K = C+1 outputs.

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


@functools.lru_cache(maxsize=None)
def ctc_problem(num_phones: int, blank_bias: float = 0.0) -> Problem:
    """The bank Problem of a linear CTC head over `num_phones` phones (head width C+1)."""

    def loss(params, batch):
        logits = head_logits(params, batch["x"])
        per_seq = optax.ctc_loss(logits, (~batch["mask"]).astype(jnp.float32), batch["labels"],
                                 (~batch["lmask"]).astype(jnp.float32), blank_id=BLANK)   # [B]
        real = batch["mask"].any(-1)
        return jnp.sum(jnp.where(real, per_seq, 0.0)) / jnp.maximum(jnp.sum(batch["w"]), 1.0)

    def evaluate(params, data):
        hyp, hyp_len = greedy_decode(head_logits(params, data["x"]), data["mask"])
        ref_len = data["lmask"].sum(-1).astype(jnp.int32)
        edits = jax.vmap(edit_distance)(hyp, hyp_len, data["labels"] - 1, ref_len).astype(jnp.float32)
        return {"loss": edits / jnp.maximum(ref_len, 1), "edits": edits}

    return Problem(name="ctc_linear", init=functools.partial(init_head, blank_bias=blank_bias),
                   loss=loss, evaluate=evaluate, layer_fields=("x",),
                   config=("linear", num_phones, blank_bias), map_layers=True)


# ----------------------------------------------------------------------------------------------
# Public entry point.

@dataclasses.dataclass
class CTCLayerResult:
    """PER of one layer's selected head: ``per`` and its ``ci`` in percent; ``lr`` and
    ``step`` the learning rate and stopping step chosen on dev, where the head reached
    ``dev_per`` (``dev_per_by_lr``: the best dev PER of every learning rate)."""

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
    eval_every: int = 200,
    blank_bias: float = 0.0,
    seed: int = 0,
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
    utterances drawn by reshuffled epochs (a function of ``seed`` and the step); dev PER is
    measured every ``eval_every`` steps (``num_steps`` is rounded up to a multiple of it).
    ``blank_bias``: initial blank logit (0 = all outputs equal). ``checkpoint_dir`` /
    ``checkpoint_every``, ``mesh_shape`` / ``devices``, ``layer_chunk`` /
    ``max_resident_bytes``: as for ``api.probe_bank`` (a chunk of layers never changes the
    results, it bounds the memory holding the features). Returns one :class:`CTCLayerResult`
    per layer, in ``layers`` order.
    """
    num_layers = train.hidden.shape[0]
    layers = np.arange(num_layers) if layers is None else np.asarray(layers, dtype=np.int64)
    for s in (dev, test):
        if s.hidden.shape[0] != num_layers or s.hidden.shape[2] != train.hidden.shape[2]:
            raise ValueError(f"{s.name}: hidden shape {s.hidden.shape} does not match "
                             f"{train.name}'s {train.hidden.shape} in layers or dims")
    if layers.size == 0 or np.any(layers < 0) or np.any(layers >= num_layers):
        raise ValueError(f"layers {layers.tolist()} out of range for {num_layers} cached layers")
    if num_steps < 1 or eval_every < 1 or batch_size < 1:
        raise ValueError("num_steps, eval_every and batch_size must be >= 1")
    splits = (train, dev, test)
    lays = [_layout(s, num_phones) for s in splits]
    if lays[0].lengths.size < batch_size:
        raise ValueError(f"{train.name}: {lays[0].lengths.size} utterances < batch_size {batch_size}")
    # One padded shape for every split: one compile of the step and of the evaluation.
    t_pad = _round_up(max(int(l.lengths.max()) for l in lays), 16)
    s_pad = _round_up(max(max(t.size for t in l.targets) for l in lays), 8)
    shared = [_fields(l, t_pad, s_pad) for l in lays]
    dim = train.hidden.shape[2]

    def load(chunk):
        xs = _padded_splits(splits, lays, [f["mask"] for f in shared], layers[chunk])
        return [{"x": x, **f} for x, f in zip(xs, shared)]

    grid = Grid.product(learning_rates)
    config = train_config("adam", num_steps, batch_size, eval_every, checkpoint_dir=checkpoint_dir,
                          checkpoint_every=checkpoint_every, mesh_shape=mesh_shape, devices=devices,
                          seed=seed)
    test_lengths = shared[2]["w"].astype(np.int64)
    per = lambda edits: 100.0 * float(np.sum(edits)) / float(test_lengths.sum())

    def collect(res, j, layer):
        edits = np.rint(res.test["edits"][j]).astype(np.int64)
        lo, hi = bootstrap.ratio_ci(edits, test_lengths, level=ci_level, num_replicates=num_bootstrap,
                                    seed=seed)
        g = int(res.choice[j])
        return CTCLayerResult(
            layer=int(layer), per=per(edits), ci=(100.0 * float(lo), 100.0 * float(hi)),
            lr=grid.lr[g], step=int(res.step[j]), dev_per=100.0 * float(res.dev_loss[j, g]),
            dev_per_by_lr={lr: 100.0 * float(res.dev_loss[j, p]) for p, lr in enumerate(grid.lr)},
            num_test_utts=int(test_lengths.size), num_test_phones=int(test_lengths.sum()),
            utt_edits=edits, utt_ref_lengths=test_lengths)

    bytes_per_layer = 2 * t_pad * dim * sum(l.lengths.size for l in lays)
    return fit_layer_chunks(ctc_problem(num_phones, float(blank_bias)), grid, config, layers.size,
                            load, collect, (dim, num_phones + 1), bytes_per_layer=bytes_per_layer,
                            layer_chunk=layer_chunk, max_resident_bytes=max_resident_bytes,
                            checkpoint_dir=checkpoint_dir, layer_ids=layers)
