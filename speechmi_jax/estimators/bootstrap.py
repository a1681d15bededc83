"""Bootstrap confidence intervals over groups (utterances), not items (frames).

Frames of one utterance are strongly dependent, so resampling frames gives intervals that are far
too narrow. Each replicate draws G groups with replacement (counts c_g ~ Multinomial(G, 1/G)); an
item of group g gets weight c_g and the statistic is recomputed from weighted per-group sums.
Intervals are percentile intervals of the replicates (Efron & Tibshirani 1993, ch. 13).

Every statistic here is a ratio of group sums (a weighted mean), so the replicates centre on the
point estimate and the percentile interval needs no bias correction. Point estimates are computed
here too, in float64 from the same sums, so an interval is never off its own estimate by the
rounding of a float32 mean.
"""

from __future__ import annotations

import numpy as np


def replicate_counts(num_groups: int, num_replicates: int, seed: int, strata=None) -> np.ndarray:
    """How often each of G groups is drawn in each replicate: float64 [B, G], rows sum to G.

    strata [G] (optional): resample within each stratum, so every replicate keeps each stratum's
    number of groups (a stratified bootstrap: the design's composition is held fixed).
    """
    rng = np.random.default_rng(seed)
    strata = np.zeros(num_groups, np.int64) if strata is None else np.asarray(strata).reshape(-1)
    if strata.shape != (num_groups,):
        raise ValueError(f"strata has shape {strata.shape}, expected ({num_groups},): one per group")
    counts = np.zeros((num_replicates, num_groups))
    for s in np.unique(strata):
        members = np.flatnonzero(strata == s)
        counts[:, members] = rng.multinomial(members.size, np.full(members.size, 1.0 / members.size),
                                             size=num_replicates)
    return counts


def group_index(groups) -> np.ndarray:
    """Dense group index in [0, G) per item for arbitrary group ids groups [N]."""
    return np.unique(np.asarray(groups), return_inverse=True)[1].reshape(-1)


def percentile_ci(replicates: np.ndarray, level: float):
    """(lo, hi) percentile interval over the last axis of replicates [..., B]."""
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha], axis=-1)
    return lo, hi


def ratio_ci(num, den, *, level=0.95, num_replicates=1000, seed=0, strata=None):
    """Percentile CI of sum(num) / sum(den) when the G groups on the last axis are resampled.

    num [..., G] and den [G] or [..., G] are per-group sums; every leading index uses the same
    resamples (paired, e.g. layers compared on the same utterances). strata [G]: see
    replicate_counts. Returns (lo, hi) arrays [...].
    """
    num = np.asarray(num, np.float64)
    den = np.broadcast_to(np.asarray(den, np.float64), num.shape)
    counts = replicate_counts(num.shape[-1], num_replicates, seed, strata)  # [B, G]
    return percentile_ci((num @ counts.T) / np.maximum(den @ counts.T, 1e-300), level)


def mean_ci(values, groups, *, offset=0.0, sign=1.0, level=0.95, num_replicates=1000, seed=0,
            strata=None):
    """offset + sign * mean(values) and its percentile CI under group resampling.

    values, groups [N]; strata [N] (optional, constant within a group): resample groups within
    strata. Returns (point, (lo, hi)), floats, all in float64.
    """
    values = np.asarray(values, np.float64).reshape(-1)
    inverse = group_index(groups)
    sums = np.bincount(inverse, weights=values)
    sizes = np.bincount(inverse).astype(np.float64)
    if strata is not None:
        strata = _per_group(inverse, np.asarray(strata).reshape(-1), "the strata (labels)")
    lo, hi = ratio_ci(sums, sizes, level=level, num_replicates=num_replicates, seed=seed, strata=strata)
    ends = sorted((offset + sign * float(lo), offset + sign * float(hi)))
    point = offset + sign * float(values.mean())
    return point, (ends[0], ends[1])


def _per_group(inverse, item_values, name):
    """The value each group's items share, [G]; raises if some group's items disagree."""
    first = np.zeros(inverse.max() + 1, item_values.dtype)
    first[inverse] = item_values
    if np.any(first[inverse] != item_values):
        raise ValueError(f"{name} must be constant within each group (group = utterance id)")
    return first


def probe_bound_ci(ce, y, groups, entropy, *, stratify=False, level=0.95, num_replicates=1000, seed=0):
    """The probe bound H(Y) - mean(CE) and its CI under group resampling; ce, y, groups [N] (nats).

    entropy: the point estimate of H(Y) from the labels y (e.g. Miller-Madow). The interval is the
    bootstrap of the bound's linearisation around the observed label frequencies p: each item
    contributes -log p(y_i) - ce_i, whose mean is plug-in H(Y) - CE exactly, plus the constant
    entropy - plug-in H(Y) (the Miller-Madow term). -log p(y) - H is the influence function of the
    entropy, so this carries the sampling error of H(Y) to first order; re-estimating H(Y) on each
    replicate instead pulls every replicate below the estimate when the labels are near uniform
    (any reweighting of a uniform label set lowers its entropy), and the interval can then
    exclude its own estimate.

    stratify: resample groups within each label (every group must carry one label). Use it when
    the test set's label composition is fixed by design (so many utterances per speaker): the
    unstratified bootstrap then counts the spread of CE across speakers as sampling error and is
    conservative. Returns (point, (lo, hi)).
    """
    y = np.asarray(y).reshape(-1)
    counts = np.bincount(y)
    neg_log_p = -np.log(counts[y] / y.size)  # every observed class has count > 0
    plugin = float(np.mean(neg_log_p, dtype=np.float64))
    values = np.asarray(ce, np.float64).reshape(-1) - neg_log_p
    return mean_ci(values, groups, offset=float(entropy) - plugin, sign=-1.0, level=level,
                   num_replicates=num_replicates, seed=seed, strata=y if stratify else None)


def with_run_spread(point: float, ci, run_values, level: float = 0.95):
    """Widens ``ci``, an interval of the mean over R training runs ``point`` that resamples the
    test set only, by the spread of the runs: each side becomes sqrt(side^2 + r^2) with
    r = t_{R-1, (1+level)/2} x sd(run_values) / sqrt(R) (a t-interval of the mean over runs).

    A trained estimator's test-set interval says how far another test set would move it, not
    another training run (another draw of minibatches and initialisation); the variances add,
    and with R of a few runs the t quantile carries the uncertainty of their spread. With one
    run there is no spread to measure: ``ci`` is returned unchanged. Returns (lo, hi)."""
    runs = np.asarray(run_values, np.float64).reshape(-1)
    if runs.size < 2:
        return float(ci[0]), float(ci[1])
    from scipy import stats

    r = stats.t.ppf(0.5 + level / 2.0, runs.size - 1) * runs.std(ddof=1) / np.sqrt(runs.size)
    return (point - float(np.hypot(point - ci[0], r)), point + float(np.hypot(ci[1] - point, r)))
