"""Correlations between two measures, with bootstrap CIs and permutation p-values (numpy).

Coefficients (each batched over leading axes: ``x, y: [..., n] -> [...]``):

* Pearson ``r = sum(dx dy) / sqrt(sum(dx^2) sum(dy^2))``;
* Spearman ``rho`` = Pearson of the average ranks (ties share their mean rank);
* Kendall ``tau_b = (n_c - n_d) / sqrt((n_0 - n_x)(n_0 - n_y))`` with ``n_0 = n(n-1)/2``
  pairs, ``n_x``/``n_y`` pairs tied in x/y (Kendall 1945; scipy's default variant).

A constant input gives NaN (the coefficient is undefined), never a silent 0.

Uncertainty (:func:`correlate`):

* **Bootstrap CI**: resample the n points with replacement ``num_bootstrap`` times and take the
  percentile interval of the coefficient. Resamples where it is undefined (all x or all y
  equal, likely with a handful of points) are dropped and counted (``num_valid``).
  With ``x_ci``/``y_ci`` given (``propagate=True``) each resampled point's value is also
  redrawn from a normal whose 95 % (or ``ci_level``) interval is the point's own CI
  (``sd = (hi - lo) / (2 z)``), so the CI covers both the choice of points and the
  estimation noise of each value.
* **Permutation p-value** (two-sided, H0: no association): the share of permutations of y
  whose ``|coefficient|`` reaches the observed one. For ``n! <= num_permutations`` all
  permutations are enumerated (exact test; with n = 5 layers the smallest possible p is
  2/120); otherwise ``num_permutations`` random ones give ``p = (1 + hits) / (1 + R)``.

Levels over a :class:`~speechmi_jax.analysis.results.Results`:
:func:`within_encoder` (across one encoder's layers), :func:`across_encoders` (one point per
encoder: its *best* layer's value, or the *mean* over its layers) and :func:`pooled` (every
(encoder, layer) point together).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from statistics import NormalDist
from typing import Optional

import numpy as np

from speechmi_jax.analysis.results import MEASURES, Results, compared

METHODS = ("spearman", "kendall", "pearson")


def rankdata(x):
    """Average ranks (1-based) along the last axis; ties get the mean of their ranks."""
    x = np.asarray(x, dtype=np.float64)
    order = np.argsort(x, axis=-1, kind="mergesort")
    xs = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    # For each sorted position: first and last index of its tie group.
    new_group = np.concatenate([np.ones(xs.shape[:-1] + (1,), bool),
                                xs[..., 1:] != xs[..., :-1]], axis=-1)
    idx = np.broadcast_to(np.arange(n), xs.shape)
    first = np.maximum.accumulate(np.where(new_group, idx, 0), axis=-1)
    end_group = np.concatenate([xs[..., 1:] != xs[..., :-1],
                                np.ones(xs.shape[:-1] + (1,), bool)], axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(end_group, idx, n), -1), axis=-1), -1)
    ranks_sorted = (first + last) / 2.0 + 1.0
    ranks = np.empty_like(ranks_sorted)
    np.put_along_axis(ranks, order, ranks_sorted, axis=-1)
    return ranks


def pearson(x, y):
    """Pearson correlation along the last axis -> [...] (NaN where x or y is constant)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    dx = x - x.mean(-1, keepdims=True)
    dy = y - y.mean(-1, keepdims=True)
    sxx, syy = (dx * dx).sum(-1), (dy * dy).sum(-1)
    den = np.sqrt(sxx * syy)
    scale = np.maximum(np.abs(x).max(-1), np.abs(y).max(-1)) + 1e-300
    # A spread at rounding level is a constant.
    ok = (np.sqrt(sxx) > 1e-12 * scale * x.shape[-1]) & (np.sqrt(syy) > 1e-12 * scale * x.shape[-1])
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(ok, (dx * dy).sum(-1) / np.where(ok, den, 1.0), np.nan)
    return np.clip(r, -1.0, 1.0)


def spearman(x, y):
    """Spearman rank correlation (average ranks for ties) along the last axis."""
    return pearson(rankdata(x), rankdata(y))


def kendall_tau_b(x, y):
    """Kendall's tau-b along the last axis (O(n^2) pairs; fine for the ~100 points here)."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    n = x.shape[-1]
    iu = np.triu_indices(n, k=1)
    sx = np.sign(x[..., :, None] - x[..., None, :])[..., iu[0], iu[1]]
    sy = np.sign(y[..., :, None] - y[..., None, :])[..., iu[0], iu[1]]
    n0 = n * (n - 1) / 2.0
    tx, ty = (sx == 0).sum(-1), (sy == 0).sum(-1)
    den = np.sqrt((n0 - tx) * (n0 - ty))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (sx * sy).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


_FUNCS = {"spearman": spearman, "kendall": kendall_tau_b, "pearson": pearson}


def coefficient(method: str):
    if method not in _FUNCS:
        raise ValueError(f"correlation method {method!r}: expected one of {METHODS}")
    return _FUNCS[method]


@dataclasses.dataclass(frozen=True)
class Correlation:
    """One correlation estimate. ``ci`` is the bootstrap percentile interval."""

    method: str
    r: float
    ci: tuple
    p_value: float
    n: int
    num_valid: int          # bootstrap resamples where the coefficient was defined
    ci_level: float
    propagated: bool        # whether each point's own CI entered the bootstrap
    exact_p: bool           # whether all permutations were enumerated

    def excludes_zero(self) -> bool:
        return bool(np.isfinite(self.ci[0]) and (self.ci[0] > 0 or self.ci[1] < 0))


def _batched(f, x, y, chunk: int = 512):
    """``f`` over the rows of ``x, y: [R, n]`` in chunks (Kendall's pair arrays are R n^2/2)."""
    return np.concatenate([f(x[a:a + chunk], y[a:a + chunk]) for a in range(0, x.shape[0], chunk)])


def _sd_from_ci(ci, level):
    if ci is None:
        return None
    ci = np.asarray(ci, np.float64)
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    return (ci[:, 1] - ci[:, 0]) / (2.0 * z)


def correlate(x, y, method: str = "spearman", *, x_ci=None, y_ci=None, propagate: bool = True,
              num_bootstrap: int = 2000, num_permutations: int = 10000,
              ci_level: float = 0.95, seed: int = 0) -> Correlation:
    """Correlation of paired values ``x, y: [n]`` with a bootstrap CI and a permutation p.

    ``x_ci, y_ci: [n, 2]`` optional per-point intervals (used when ``propagate``).
    """
    f = coefficient(method)
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 1 or x.shape != y.shape:
        raise ValueError(f"correlate: x and y must be 1-D of one length, got {x.shape}, {y.shape}")
    n = x.size
    if n < 3:
        raise ValueError(f"correlate: need at least 3 points, got {n}")
    r = float(f(x, y))
    rng = np.random.default_rng(seed)

    idx = rng.integers(0, n, size=(num_bootstrap, n))
    xb, yb = x[idx], y[idx]
    sdx, sdy = _sd_from_ci(x_ci, ci_level), _sd_from_ci(y_ci, ci_level)
    propagated = bool(propagate and (sdx is not None or sdy is not None))
    if propagated:
        if sdx is not None:
            xb = xb + sdx[idx] * rng.standard_normal(xb.shape)
        if sdy is not None:
            yb = yb + sdy[idx] * rng.standard_normal(yb.shape)
    rb = _batched(f, xb, yb)
    rb = rb[np.isfinite(rb)]
    alpha = (1.0 - ci_level) / 2.0
    ci = ((float(np.quantile(rb, alpha)), float(np.quantile(rb, 1.0 - alpha)))
          if rb.size >= max(20, num_bootstrap // 2) else (math.nan, math.nan))

    exact = math.factorial(n) <= num_permutations
    if exact:
        perms = np.asarray(list(itertools.permutations(range(n))))
    else:
        perms = np.argsort(rng.random((num_permutations, n)), axis=-1)
    rp = _batched(f, np.broadcast_to(x, perms.shape), y[perms])
    if not np.isfinite(r):
        p = math.nan
    else:
        hits = int(np.sum(np.abs(rp) >= abs(r) - 1e-12))
        p = hits / perms.shape[0] if exact else (1 + hits) / (1 + perms.shape[0])
    return Correlation(method, r, ci, float(p), n, int(rb.size), ci_level, propagated, exact)


def expected_sign(mx: str, my: str) -> int:
    """+1 when both measures are "higher is better" (or both error rates), else -1."""
    return 1 if MEASURES[mx].higher_is_better == MEASURES[my].higher_is_better else -1


def verdict(c: Optional[Correlation], sign: int) -> str:
    """``"agrees"`` / ``"disagrees"``: the coefficient has the expected ``sign`` / the opposite,
    its CI excludes 0 and the permutation p <= 1 - ci_level; else ``"inconclusive"``."""
    if c is None or c.r != c.r or not c.excludes_zero() or c.p_value > 1.0 - c.ci_level:
        return "inconclusive"
    return "agrees" if (c.r > 0) == (sign > 0) else "disagrees"


# ----------------------------------------------------------------------------------------------
# Levels over a results table.

def common_points(res: Results, mx: str, my: str, encoders=None) -> list[tuple]:
    """(encoder, layer, record of mx, record of my) for every point that has both measures."""
    pts = []
    for enc in encoders or res.encoders():
        for layer in res.layers(enc, mx):
            a, b = res.get(enc, layer, mx), res.get(enc, layer, my)
            if b is not None:
                pts.append((enc, layer, a, b))
    return pts


def _arrays(recs_x, recs_y):
    """(x, y, x intervals, y intervals) as compared (``results.compared``: a measure with a
    target by its score)."""
    cx, cy = [compared(r) for r in recs_x], [compared(r) for r in recs_y]
    return (np.array([c[0] for c in cx]), np.array([c[0] for c in cy]),
            np.array([c[1] for c in cx]), np.array([c[1] for c in cy]))


def _run(recs_x, recs_y, method, res, kwargs):
    x, y, xc, yc = _arrays(recs_x, recs_y)
    kwargs = {"ci_level": res.ci_level, **kwargs}
    return correlate(x, y, method, x_ci=xc, y_ci=yc, **kwargs)


def within_encoder(res: Results, mx: str, my: str, method: str = "spearman",
                   min_points: int = 3, **kwargs) -> dict[str, Correlation]:
    """Across the layers of each encoder that has ``min_points`` layers with both measures."""
    out = {}
    for enc in res.encoders():
        pts = common_points(res, mx, my, [enc])
        if len(pts) >= max(min_points, 3):
            out[enc] = _run([p[2] for p in pts], [p[3] for p in pts], method, res, kwargs)
    return out


def pooled(res: Results, mx: str, my: str, method: str = "spearman",
           **kwargs) -> Optional[Correlation]:
    """Over every (encoder, layer) point that has both measures (None under 3 points)."""
    pts = common_points(res, mx, my)
    if len(pts) < 3:
        return None
    return _run([p[2] for p in pts], [p[3] for p in pts], method, res, kwargs)


def best_layer(res: Results, encoder: str, measure: str):
    """The encoder's record with the best value of ``measure`` (max, or min for error rates;
    for a measure with a target, the value nearest it: ``results.compared``)."""
    series = res.series(encoder, measure)
    if not series:
        return None
    sign = 1.0 if MEASURES[measure].higher_is_better else -1.0
    key = lambda r: sign * compared(r)[0]  # noqa: E731
    return max(series, key=key)


def encoder_summary(res: Results, encoder: str, measure: str, summary: str):
    """One (value, (lo, hi)) per encoder: ``"best"`` layer's record, or ``"mean"`` over layers.

    For ``"mean"`` the interval is the mean of the layers' interval ends (it treats their
    errors as fully correlated, so it is wide rather than narrow).
    """
    series = res.series(encoder, measure)
    if not series:
        return None
    if summary == "best":
        return compared(best_layer(res, encoder, measure))
    if summary == "mean":
        cs = [compared(r) for r in series]
        return (float(np.mean([c[0] for c in cs])),
                (float(np.mean([c[1][0] for c in cs])), float(np.mean([c[1][1] for c in cs]))))
    raise ValueError(f"summary {summary!r}: expected 'best' or 'mean'")


def across_encoders(res: Results, mx: str, my: str, method: str = "spearman",
                    summary: str = "best", **kwargs) -> Optional[Correlation]:
    """Across encoders, one point each (see :func:`encoder_summary`); None under 3 encoders.

    With ``"best"`` each measure takes its own best layer, so the question is "does the
    label-free measure rank the *models* as the supervised one does".
    """
    xs, ys = [], []
    for enc in res.encoders():
        a, b = encoder_summary(res, enc, mx, summary), encoder_summary(res, enc, my, summary)
        if a is not None and b is not None:
            xs.append(a)
            ys.append(b)
    if len(xs) < 3:
        return None
    kwargs = {"ci_level": res.ci_level, **kwargs}
    return correlate([a[0] for a in xs], [b[0] for b in ys], method,
                     x_ci=[a[1] for a in xs], y_ci=[b[1] for b in ys], **kwargs)
