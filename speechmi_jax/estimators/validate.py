"""Input checks shared by the estimators: each error names the array, its shape and what was expected."""

from __future__ import annotations

import numpy as np


def finite(name: str, shape, block: np.ndarray, layer0: int, idx: np.ndarray) -> None:
    """Raises if a loaded block [l, n, D] = x[layer0:layer0 + l][:, idx] of array `name` (full
    shape `shape`) holds NaN or Inf, naming the layer and the item."""
    if not np.isfinite(block).all():
        l, i = np.argwhere((~np.isfinite(block)).any(axis=-1))[0]
        raise ValueError(
            f"{name} {tuple(shape)} holds a non-finite value at layer {layer0 + int(l)}, item "
            f"{int(idx[i])}: expected finite features"
        )


def ndim(name: str, x, expected: int, layout: str) -> None:
    if x.ndim != expected:
        raise ValueError(f"{name} has shape {tuple(x.shape)}: expected {expected} dims {layout}")


def same_length(**arrays_and_axes) -> int:
    """arrays_and_axes: name=(array, item_axis). Raises unless all have the same item count."""
    lengths = {k: a.shape[ax] for k, (a, ax) in arrays_and_axes.items()}
    if len(set(lengths.values())) != 1:
        desc = ", ".join(f"{k} {tuple(a.shape)} -> N={lengths[k]}" for k, (a, _) in arrays_and_axes.items())
        raise ValueError(f"mismatched item counts: {desc}; expected one N for all")
    return next(iter(lengths.values()))


def labels(name: str, y, num_classes: int | None) -> int:
    """Labels must be integers in [0, num_classes) or -1 (ignored); returns num_classes
    (max label + 1 when None)."""
    if not np.issubdtype(np.asarray(y).dtype, np.integer):
        raise ValueError(f"{name} has dtype {np.asarray(y).dtype}: expected integer class ids "
                         "(map names to ids first, e.g. np.unique(names, return_inverse=True))")
    if num_classes is None:
        num_classes = int(y.max()) + 1
    bad = (y < -1) | (y >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} {tuple(y.shape)} holds label {int(y[i])} at index {i}: expected -1 (ignored) "
            f"or a class id in [0, {num_classes})"
        )
    return num_classes


def several_classes(name: str, y) -> None:
    """A probe's held-out labels need two classes at least: with one, H(Y) = 0 and the bound
    H(Y) - CE is at most 0 bits, however good the features."""
    present = np.unique(y[y >= 0])
    if present.size < 2:
        raise ValueError(
            f"{name} holds {present.size} class{'es' if present.size != 1 else ''} "
            f"{present.tolist()} over {int((y >= 0).sum())} items: H(Y) = 0 there, so the bound "
            "H(Y) - CE cannot be positive; expected at least 2 classes in the test split"
        )


def classes_in_train(y_train, y_other, other_name: str) -> None:
    """Every class seen in a held-out split must occur in the training split."""
    seen = set(np.unique(y_train[y_train >= 0]).tolist())
    missing = sorted(set(np.unique(y_other[y_other >= 0]).tolist()) - seen)
    if missing:
        raise ValueError(
            f"classes {missing[:10]}{'...' if len(missing) > 10 else ''} occur in {other_name} but "
            f"are absent from the training split ({len(seen)} classes there): expected every "
            "held-out class to have training items"
        )


def enough(name: str, n: int, needed: int, why: str) -> None:
    if n < needed:
        raise ValueError(f"{name} has {n} items: expected at least {needed} ({why})")
