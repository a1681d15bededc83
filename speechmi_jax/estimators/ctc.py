"""Layer-wise phone error rate of linear CTC heads on frozen features (SUPERB "PR" style).

For every layer ``l`` a linear map ``logits = standardize(z_l) @ W_l + b_l`` with
``W_l: [D, C+1]`` is trained with the CTC loss (Graves et al., ICML 2006) to emit the phone
sequence of each utterance; the phone error rate of its greedy transcripts on held-out
utterances says how linearly *decodable* the phone sequence is in that layer (SUPERB,
Yang et al., Interspeech 2021, task PR; there the head is also linear).

Conventions (the one place that states them):

* **Blank = index 0**; phone id ``c`` (0..C-1, the package's phone set) is head output ``c+1``.
* **Targets** (:func:`ctc_targets`): the utterance's phone sequence with runs of the same
  phone merged (aligners split one phone into adjacent segments, frame labels repeat it for
  every frame) and silence / unlabelled entries removed afterwards. A phone repeated across a
  pause (``s sil s``) therefore stays two phones, so targets may hold adjacent repeats, which
  CTC handles with a blank between them.
* **Features** are standardized per layer and dimension with the training frames' mean and
  standard deviation, so one learning-rate grid suits layers of any scale.
* **Bank**: params ``W [L, G, D, C+1]``, ``b [L, G, C+1]`` for L layers x G learning rates
  train in one jitted step. Adam is elementwise, so each member follows exactly the updates it
  would get alone (zero init, shared minibatch order).
* **Selection**: every ``eval_every`` steps each member's PER on the dev split is measured and
  its best parameters are kept (early stopping); per layer the learning rate with the lowest
  dev PER is chosen, and only that head is evaluated on test.
* **PER** = 100 x (total Levenshtein distance between greedy hypotheses and references) /
  (total reference length), in percent. Greedy decoding takes the per-frame argmax, collapses
  repeats, then drops blanks. The CI is a percentile bootstrap over test utterances (the ratio
  of resampled sums), with the same resamples for every layer.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from speechmi_jax import frames
from speechmi_jax.estimators import bootstrap

BLANK = 0
log = logging.getLogger("speechmi_jax.ctc")


# ----------------------------------------------------------------------------------------------
# Targets and edit distance.

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
    of the training utterances (seeded) becomes the dev split.
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

    tr = rows(train)
    if isinstance(dev, str):
        dv = rows(dev)
    else:
        if not 0.0 < float(dev) < 1.0:
            raise ValueError(f"dev must be a split name or a fraction in (0, 1), got {dev!r}")
        perm = np.random.default_rng(seed).permutation(tr)
        n_dev = max(1, int(round(float(dev) * tr.size)))
        dv, tr = np.sort(perm[:n_dev]), np.sort(perm[n_dev:])
    make = lambda name, r: CTCSplit(features.hidden, offsets, targets, r, name)
    return make(train, tr), make(dev if isinstance(dev, str) else "dev", dv), make(test, rows(test))


@dataclasses.dataclass
class _Packed:
    frames: jax.Array        # [L, N_s + 1, D] float16; the last frame is a zero pad frame
    starts: np.ndarray       # [U_s] first frame of each utterance in ``frames``
    lengths: np.ndarray      # [U_s]
    targets: list            # U_s int32 arrays


def _pack(split: CTCSplit, layers: np.ndarray, num_phones: int) -> _Packed:
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
    idx = np.concatenate([np.arange(offsets[u], offsets[u + 1]) for u in utts])
    parts = [np.asarray(hidden[int(l)][idx], dtype=np.float16) for l in layers]
    stacked = np.stack(parts)                                     # [L, N_s, D]
    stacked = np.concatenate([stacked, np.zeros_like(stacked[:, :1])], axis=1)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    return _Packed(jnp.asarray(stacked), starts, lengths, targets)


def _batch(p: _Packed, sel: np.ndarray, t_pad: int, s_pad: int):
    """Frame indices [B, T] (pad -> the zero frame), mask, labels [B, S] (+1 shift), label mask."""
    b = sel.size
    pad_frame = p.frames.shape[1] - 1
    fidx = np.full((b, t_pad), pad_frame, np.int32)
    mask = np.zeros((b, t_pad), bool)
    labels = np.zeros((b, s_pad), np.int32)
    lmask = np.zeros((b, s_pad), bool)
    for i, u in enumerate(sel):
        if u < 0:   # filler row of a short last eval batch
            continue
        n, tgt = p.lengths[u], p.targets[u]
        fidx[i, :n] = p.starts[u] + np.arange(n)
        mask[i, :n] = True
        labels[i, :tgt.size] = tgt + 1
        lmask[i, :tgt.size] = True
    return fidx, mask, labels, lmask


def _standardizer(p: _Packed, chunk: int = 65536):
    """Per-layer, per-dim mean and 1/std of the training frames (float64 sums) -> [L, D] x 2."""
    n = int(p.lengths.sum())
    x = p.frames
    s1 = np.zeros((x.shape[0], x.shape[2]))
    s2 = np.zeros_like(s1)
    for a in range(0, n, chunk):
        c = np.asarray(x[:, a:min(a + chunk, n)], dtype=np.float64)
        s1 += c.sum(1)
        s2 += (c * c).sum(1)
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    inv = 1.0 / np.maximum(std, 1e-6 * max(float(std.max()), 1e-30))
    return jnp.asarray(mean, jnp.float32), jnp.asarray(inv, jnp.float32)


# ----------------------------------------------------------------------------------------------
# Bank kernels. Shapes: L layers, G learning rates, B utterances, T frames, D dims, K = C+1.

def _features(frames_, fidx, mask, mean, inv):
    x = frames_[:, fidx].astype(jnp.float32)                         # [L, B, T, D]
    x = (x - mean[:, None, None, :]) * inv[:, None, None, :]
    return jnp.where(mask[None, :, :, None], x, 0.0)


def _logits(params, x):
    """params W [L, G, D, K], b [L, G, K]; x [L, B, T, D] -> [L, G, B, T, K].

    One batched matmul per layer against all G heads side by side (``[D, G*K]``): on CPU
    this runs about 2x faster than contracting with ``W`` in its stored layout.
    """
    n_l, n_g, d, k = params["w"].shape
    w = jnp.moveaxis(params["w"], 1, 2).reshape(n_l, d, n_g * k)
    y = jnp.einsum("lbtd,ldm->lbtm", x, w).reshape(x.shape[:3] + (n_g, k))
    return jnp.moveaxis(y, 3, 1) + params["b"][:, :, None, None, :]


def _bank_loss(params, x, mask, labels, lmask):
    """Sum over members of each member's CTC loss per reference phone."""
    logits = _logits(params, x)
    lp, lb = (~mask).astype(jnp.float32), (~lmask).astype(jnp.float32)
    per_seq = jax.vmap(jax.vmap(lambda lg: optax.ctc_loss(lg, lp, labels, lb, blank_id=BLANK)))(
        logits)                                                      # [L, G, B]
    per_member = per_seq.sum(-1) / jnp.maximum(lmask.sum(), 1)
    return per_member.sum(), per_member


_ADAM = optax.scale_by_adam()


@jax.jit
def _train_step(params, opt_state, lrs, frames_, fidx, mask, labels, lmask, mean, inv):
    x = _features(frames_, fidx, mask, mean, inv)
    (_, per_member), grads = jax.value_and_grad(_bank_loss, has_aux=True)(
        params, x, mask, labels, lmask)
    updates, opt_state = _ADAM.update(grads, opt_state, params)
    scale = lambda u: -lrs.reshape((1, -1) + (1,) * (u.ndim - 2)) * u
    params = optax.apply_updates(params, jax.tree.map(scale, updates))
    return params, opt_state, per_member


@jax.jit
def _eval_step(params, frames_, fidx, mask, labels, lmask, mean, inv):
    """Edit distances of greedy transcripts -> int32 [L, G, B]."""
    x = _features(frames_, fidx, mask, mean, inv)
    logits = _logits(params, x)
    hyp, hyp_len = jax.vmap(jax.vmap(lambda lg: greedy_decode(lg, mask)))(logits)
    ref, ref_len = labels - 1, lmask.sum(-1).astype(jnp.int32)
    ed = jax.vmap(edit_distance, in_axes=(0, 0, 0, 0))
    return jax.vmap(jax.vmap(lambda h, hl: ed(h, hl, ref, ref_len)))(hyp, hyp_len)


def _evaluate(params, p: _Packed, t_pad, s_pad, batch_size, mean, inv):
    """Per-utterance edit distances [L, G, U] and reference lengths [U]."""
    u = p.lengths.size
    out = []
    for a in range(0, u, batch_size):
        sel = np.arange(a, a + batch_size)
        sel = np.where(sel < u, sel, -1)
        fidx, mask, labels, lmask = _batch(p, sel, t_pad, s_pad)
        out.append(np.asarray(_eval_step(params, p.frames, fidx, mask, labels, lmask, mean, inv)))
    edits = np.concatenate(out, axis=-1)[..., :u]
    return edits, np.asarray([t.size for t in p.targets], np.int64)


def _fit_chunk(train, dev, test, layers, num_phones, *, learning_rates, num_steps, batch_size,
               eval_every, seed):
    """Trains the bank of ``layers`` x ``learning_rates`` -> (best dev PER [l, G], best step
    [l, G], test edit distances of the best heads [l, G, U_test], test reference lengths [U])."""
    tr, dv, te = (_pack(s, layers, num_phones) for s in (train, dev, test))
    if tr.lengths.size < batch_size:
        raise ValueError(f"{train.name}: {tr.lengths.size} utterances < batch_size {batch_size}")
    # One padded shape for every split: one compile of each step.
    t_pad = _round_up(max(int(p.lengths.max()) for p in (tr, dv, te)), 16)
    s_pad = _round_up(max(max(t.size for t in p.targets) for p in (tr, dv, te)), 8)
    mean, inv = _standardizer(tr)

    lrs = jnp.asarray(learning_rates, jnp.float32)
    n_l, n_g, d, k = layers.size, lrs.size, tr.frames.shape[2], num_phones + 1
    params = {"w": jnp.zeros((n_l, n_g, d, k), jnp.float32),
              "b": jnp.zeros((n_l, n_g, k), jnp.float32)}
    opt_state = _ADAM.init(params)
    best = params
    best_dev = np.full((n_l, n_g), np.inf)
    best_step = np.zeros((n_l, n_g), np.int64)

    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(tr.lengths.size), 0
    for step in range(1, num_steps + 1):
        if pos + batch_size > order.size:
            order, pos = rng.permutation(tr.lengths.size), 0
        sel = order[pos:pos + batch_size]
        pos += batch_size
        fidx, mask, labels, lmask = _batch(tr, sel, t_pad, s_pad)
        params, opt_state, loss = _train_step(params, opt_state, lrs, tr.frames, fidx, mask,
                                              labels, lmask, mean, inv)
        if step % eval_every == 0 or step == num_steps:
            edits, ref_lens = _evaluate(params, dv, t_pad, s_pad, batch_size, mean, inv)
            dev_per = 100.0 * edits.sum(-1) / max(ref_lens.sum(), 1)
            log.info("ctc layers %s step %d: train loss/phone %s, dev PER %s", layers.tolist(),
                     step, np.round(np.asarray(loss), 3).tolist(), np.round(dev_per, 1).tolist())
            improved = dev_per < best_dev
            best_dev = np.where(improved, dev_per, best_dev)
            best_step = np.where(improved, step, best_step)
            imp = jnp.asarray(improved)
            best = jax.tree.map(
                lambda new, old: jnp.where(imp.reshape(imp.shape + (1,) * (new.ndim - 2)),
                                           new, old), params, best)
    edits, ref_lens = _evaluate(best, te, t_pad, s_pad, batch_size, mean, inv)
    return best_dev, best_step, edits, ref_lens


# ----------------------------------------------------------------------------------------------
# Public entry point.

@dataclasses.dataclass
class CTCLayerResult:
    """PER of one layer's selected head. ``per`` and ``ci`` in percent."""

    layer: int
    per: float
    ci: tuple
    dev_per: float
    learning_rate: float
    best_step: int
    dev_per_by_lr: dict
    num_test_utts: int
    num_test_phones: int
    utt_edits: np.ndarray = dataclasses.field(repr=False)      # [U_test]
    utt_ref_lengths: np.ndarray = dataclasses.field(repr=False)  # [U_test]

    def record(self, encoder: str) -> dict:
        """This layer as a ``ctc_per`` record of the results schema (docs/results_schema.md)."""
        return {"encoder": encoder, "layer": self.layer, "measure": "ctc_per", "value": self.per,
                "ci": [self.ci[0], self.ci[1]], "unit": "percent",
                "extra": {"dev_per": self.dev_per, "learning_rate": self.learning_rate,
                          "best_step": self.best_step, "num_test_utts": self.num_test_utts,
                          "num_test_phones": self.num_test_phones}}


def _round_up(n, m):
    return int(math.ceil(max(n, 1) / m) * m)


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
    seed: int = 0,
    num_bootstrap: int = 1000,
    ci_level: float = 0.95,
    layer_chunk: Optional[int] = None,
) -> list[CTCLayerResult]:
    """Trains linear CTC heads for all ``layers`` x ``learning_rates`` at once -> PER per layer.

    ``num_phones`` C is the size of the phone set (head width C+1, blank 0). ``layers``
    indexes the caches' first axis (default: all). Minibatches are ``batch_size`` training
    utterances drawn by reshuffled epochs (seeded); dev PER is measured every ``eval_every``
    steps and at the end. Returns one :class:`CTCLayerResult` per layer, in ``layers`` order.

    ``layer_chunk`` trains that many layers per bank, one bank after another, each with the
    same minibatch order (so the results do not change); it bounds the memory that holds
    the features (all of a split's frames for the chunk's layers stay resident). ``None`` =
    all layers in one bank.
    """
    num_layers = train.hidden.shape[0]
    layers = np.arange(num_layers) if layers is None else np.asarray(layers, dtype=np.int64)
    for s in (dev, test):
        if s.hidden.shape[0] != num_layers or s.hidden.shape[2] != train.hidden.shape[2]:
            raise ValueError(f"{s.name}: hidden shape {s.hidden.shape} does not match "
                             f"{train.name}'s {train.hidden.shape} in layers or dims")
    if np.any(layers < 0) or np.any(layers >= num_layers):
        raise ValueError(f"layers {layers.tolist()} out of range for {num_layers} cached layers")
    if num_steps < 1 or eval_every < 1 or batch_size < 1:
        raise ValueError("num_steps, eval_every and batch_size must be >= 1")
    if layer_chunk is not None and layer_chunk < 1:
        raise ValueError(f"layer_chunk must be >= 1 or None, got {layer_chunk}")
    chunk = layers.size if layer_chunk is None else int(layer_chunk)
    fit = dict(learning_rates=learning_rates, num_steps=num_steps, batch_size=batch_size,
               eval_every=eval_every, seed=seed)
    parts = [_fit_chunk(train, dev, test, layers[a:a + chunk], num_phones, **fit)
             for a in range(0, layers.size, chunk)]
    best_dev = np.concatenate([p[0] for p in parts])                          # [L, G]
    best_step = np.concatenate([p[1] for p in parts])
    edits = np.concatenate([p[2] for p in parts])                             # [L, G, U]
    ref_lens = parts[0][3]
    n_l = layers.size
    choice = np.argmin(best_dev, axis=1)                                       # [L]
    chosen = edits[np.arange(n_l), choice]                                     # [L, U]
    lo, hi = bootstrap.ratio_ci(chosen, ref_lens, level=ci_level, num_replicates=num_bootstrap, seed=seed)
    total = max(int(ref_lens.sum()), 1)
    results = []
    for i, layer in enumerate(layers):
        g = int(choice[i])
        results.append(CTCLayerResult(
            layer=int(layer),
            per=100.0 * float(chosen[i].sum()) / total,
            ci=(100.0 * float(lo[i]), 100.0 * float(hi[i])),
            dev_per=float(best_dev[i, g]),
            learning_rate=float(learning_rates[g]),
            best_step=int(best_step[i, g]),
            dev_per_by_lr={float(lr): float(best_dev[i, j]) for j, lr in enumerate(learning_rates)},
            num_test_utts=int(ref_lens.size),
            num_test_phones=int(ref_lens.sum()),
            utt_edits=chosen[i].astype(np.int64),
            utt_ref_lengths=ref_lens,
        ))
    return results
