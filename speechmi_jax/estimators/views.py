"""Views: (a, b, groups) pairs for InfoNCE built from per-utterance frame sequences.

Frames of all utterances are stored back to back, x [..., N, D], with utterance u spanning rows
offsets[u]:offsets[u + 1] (offsets [U + 1], offsets[0] = 0). Pairs never cross utterances and
carry their utterance index as group (the bootstrap unit). Index builders return row indices, so
a caller can gather from a memmap only what it needs; `gather` applies them.

* shift_pairs(offsets, k): frame t vs frame t + k of the same utterance.
* context_pairs(x, offsets, window, segment, mode): the mean (or concatenation) of frames
  t - window .. t - 1 vs the mean of frames t .. t + segment - 1.
* input_context(fs, lm, context_s): for each frame of one feature set, the frames of another
  (log-mel) within ``context_s`` of the same instant, stacked: a layer vs its input.
* FrameView(hidden [L, N, D], frames [P]): ``hidden[:, frames]`` gathered lazily, so a bank
  reads only the rows it needs from a float16 memmap.
* kmeans_codes(x, fit, num_codes, seed): k-means code of every row, centres fitted on the rows
  ``fit`` only (the training frames): a discrete target Z_target for a softmax p_psi. The last
  few results are kept by the digest of their inputs: encoders of one frame grid predict the
  same input codes, fitted once a run.
* utterance_blocks(groups, k, rng): blocks of k pairs inside one utterance, the candidate sets of
  InfoNCE with same-utterance negatives.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib

import numpy as np

from speechmi_jax import frames as frames_lib
from speechmi_jax.estimators import kmeans
from speechmi_jax.estimators.api import standardize_splits


def _check_offsets(offsets) -> np.ndarray:
    offsets = np.asarray(offsets, np.int64)
    if offsets.ndim != 1 or offsets.size < 2 or offsets[0] != 0 or (np.diff(offsets) < 0).any():
        raise ValueError(f"offsets {offsets.shape}: expected non-decreasing [U + 1] starting at 0")
    return offsets


def _anchors(offsets, before: int, after: int):
    """Rows t with t - before >= start and t + after < end of their utterance, and utterance ids."""
    offsets = _check_offsets(offsets)
    rows, groups = [], []
    for u, (s, e) in enumerate(zip(offsets[:-1], offsets[1:])):
        t = np.arange(s + before, e - after)
        rows.append(t)
        groups.append(np.full(t.size, u))
    rows, groups = np.concatenate(rows), np.concatenate(groups)
    if rows.size == 0:
        raise ValueError(f"no utterance is long enough for a window of {before} + {after} + 1 frames")
    return rows, groups


def shift_pairs(offsets, k: int):
    """(rows_a, rows_b = rows_a + k, groups) for frame t vs frame t + k (k >= 1)."""
    if k < 1:
        raise ValueError(f"k={k}: expected a shift >= 1")
    rows, groups = _anchors(offsets, 0, k)
    return rows, rows + k, groups


def gather(x, rows) -> np.ndarray:
    """x[..., rows, :] as float32 (reads only those rows of a memmap)."""
    return np.asarray(x[..., rows, :], np.float32)


def context_pairs(x, offsets, window: int, segment: int = 1, mode: str = "mean"):
    """(a, b, groups): context of `window` frames before t vs the `segment` frames from t.

    x [..., N, D]. mode "mean": a = mean(x[t-window:t]) [..., M, D]; "concat": a = the window's
    frames concatenated [..., M, window * D]. b = mean(x[t:t+segment]) [..., M, D].
    """
    if window < 1 or segment < 1:
        raise ValueError(f"window={window}, segment={segment}: expected both >= 1")
    rows, groups = _anchors(offsets, window, segment - 1)
    x = np.asarray(x, np.float32)
    ctx = np.stack([x[..., rows - window + i, :] for i in range(window)], axis=-2)  # [..., M, w, D]
    if mode == "mean":
        a = ctx.mean(axis=-2)
    elif mode == "concat":
        a = ctx.reshape(ctx.shape[:-2] + (window * x.shape[-1],))
    else:
        raise ValueError(f"mode={mode!r}: expected 'mean' or 'concat'")
    b = np.mean([x[..., rows + i, :] for i in range(segment)], axis=0)
    return a, b, groups


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

    ``fs``, ``lm``: feature sets (``features.FeatureSet``) of the same utterances in the same
    order. Returns float16 [N, (2c+1) * D_mel] where c = round(context_s * mel frame rate);
    frames past an utterance's edge repeat its first/last log-mel frame.
    """
    if list(fs.utt_ids) != list(lm.utt_ids):
        raise ValueError("input_context: the feature sets hold different utterances")
    c = int(round(context_s * lm.encoder["frame_rate"]))
    mel = lm.layer(0)
    out = np.empty((fs.num_frames, (2 * c + 1) * mel.shape[1]), np.float16)
    for u in range(fs.num_utterances):
        f0, f1 = int(fs.utt_offsets[u]), int(fs.utt_offsets[u + 1])
        m0, m1 = int(lm.utt_offsets[u]), int(lm.utt_offsets[u + 1])
        centres = frames_lib.frame_centres(f1 - f0, fs.encoder["frame_rate"],
                                           fs.encoder["frame_offset_s"])
        idx = np.rint((centres - lm.encoder["frame_offset_s"])
                      * lm.encoder["frame_rate"]).astype(np.int64)
        win = np.clip(idx[:, None] + np.arange(-c, c + 1)[None, :], 0, m1 - m0 - 1)  # [T, 2c+1]
        win = win + m0
        out[f0:f1] = np.asarray(mel[win.reshape(-1)]).reshape(f1 - f0, -1)
    return out


def utterance_blocks(groups: np.ndarray, k: int, rng) -> np.ndarray:
    """Blocks of k pair indices, each block inside one group (utterance): idx [n_blocks, k].

    A group's pairs are shuffled and cut into whole blocks (the remainder, and any group with
    fewer than k pairs, is left out). In InfoNCE over such a block the negatives of a query are
    other frames of its own utterance (as CPC and wav2vec 2.0 draw them), so what identifies
    the utterance (speaker, channel) no longer tells the positive from the negatives."""
    blocks = []
    for g in np.unique(groups):
        members = rng.permutation(np.flatnonzero(groups == g))
        n = (members.size // k) * k
        blocks.extend(members[:n].reshape(-1, k))
    return np.asarray(blocks, np.int64).reshape(-1, k)


_CODES: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
_CODES_KEPT = 4


def kmeans_codes(x, fit: np.ndarray, num_codes: int, seed: int) -> np.ndarray:
    """k-means ids [P] int32 of the rows of x [P, D], centres fitted on ``x[fit]`` only (fit
    [P] bool: the training rows), every dimension scaled by the fitted rows' statistics first
    (``estimators.kmeans``). The same inputs give the same ids without a second fit (the
    last ``_CODES_KEPT`` results are kept by the SHA-256 of the inputs)."""
    x = np.ascontiguousarray(x)
    fit = np.ascontiguousarray(fit, bool)
    if fit.shape != (x.shape[0],):
        raise ValueError(f"fit has shape {fit.shape}: expected ({x.shape[0]},) to match x {x.shape}")
    if fit.sum() < num_codes:
        raise ValueError(f"{int(fit.sum())} training rows cannot fit {num_codes} k-means codes")
    h = hashlib.sha256(repr((x.dtype.str, x.shape, int(num_codes), int(seed))).encode())
    h.update(x.data)
    h.update(fit.data)
    key = h.hexdigest()
    if key not in _CODES:
        x = x.astype(np.float32, copy=False)
        train, everything = standardize_splits(x[fit][None], x[None])
        centres = kmeans.kmeans_fit(train[0], num_codes, seed=seed)
        _CODES[key] = np.asarray(kmeans.kmeans_assign(everything[0], centres), np.int32)
        while len(_CODES) > _CODES_KEPT:
            _CODES.popitem(last=False)
    _CODES.move_to_end(key)
    return _CODES[key].copy()
