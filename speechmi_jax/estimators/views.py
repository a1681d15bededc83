"""Views: (a, b, groups) pairs for InfoNCE built from per-utterance frame sequences.

Frames of all utterances are stored back to back, x [..., N, D], with utterance u spanning rows
offsets[u]:offsets[u + 1] (offsets [U + 1], offsets[0] = 0). Pairs never cross utterances and
carry their utterance index as group (the bootstrap unit). Index builders return row indices, so
a caller can gather from a memmap only what it needs; `gather` applies them.

* shift_pairs(offsets, k): frame t vs frame t + k of the same utterance.
* same_frame_pairs(offsets): frame t vs frame t (a layer vs the input features: the caller
  passes the two arrays, e.g. infonce_bank(a=z[1:], b=z[:1])).
* context_pairs(x, offsets, window, segment, mode): the mean (or concatenation) of frames
  t - window .. t - 1 vs the mean of frames t .. t + segment - 1.
"""

from __future__ import annotations

import numpy as np


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


def same_frame_pairs(offsets):
    """(rows, rows, groups): frame t of one array vs frame t of another."""
    rows, groups = _anchors(offsets, 0, 0)
    return rows, rows, groups


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
