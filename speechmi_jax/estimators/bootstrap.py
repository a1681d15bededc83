"""Bootstrap confidence intervals over groups (utterances), not items (frames).

Frames of one utterance are strongly dependent, so resampling frames gives intervals that are far
too narrow. Each replicate draws G groups with replacement (counts c_g ~ Multinomial(G, 1/G)); an
item of group g gets weight c_g and the statistic is recomputed from weighted per-group sums.
Intervals are percentile intervals of the replicates (Efron & Tibshirani 1993, ch. 13).
"""

from __future__ import annotations

import numpy as np


def group_counts(groups: np.ndarray, num_replicates: int, seed: int):
    """(group index per item [N], replicate counts [B, G]) for arbitrary group ids groups [N]."""
    _, inverse = np.unique(np.asarray(groups), return_inverse=True)
    num_groups = int(inverse.max()) + 1
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(num_groups, np.full(num_groups, 1.0 / num_groups), size=num_replicates)
    return inverse, counts.astype(np.float64)


def percentile_ci(replicates: np.ndarray, level: float) -> tuple[float, float]:
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(replicates, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def mean_ci(values, groups, *, level=0.95, num_replicates=1000, seed=0, offset=0.0):
    """Percentile CI of offset - mean(values) under group resampling (the InfoNCE bound's form)."""
    values = np.asarray(values, np.float64)
    inverse, counts = group_counts(groups, num_replicates, seed)
    sums = np.bincount(inverse, weights=values, minlength=counts.shape[1])
    sizes = np.bincount(inverse, minlength=counts.shape[1]).astype(np.float64)
    return percentile_ci(offset - (counts @ sums) / (counts @ sizes), level)


def probe_bound_ci(ce, y, num_classes, groups, entropy, *, level=0.95, num_replicates=1000, seed=0):
    """Percentile CI of H(Y) - mean(CE) under group resampling; ce, y, groups [N] (nats).

    Both terms are recomputed on each replicate; entropy(class_counts [B, C]) -> [B] estimates
    H(Y) from the resampled label counts.
    """
    ce = np.asarray(ce, np.float64)
    inverse, counts = group_counts(groups, num_replicates, seed)
    g = counts.shape[1]
    ce_sums = np.bincount(inverse, weights=ce, minlength=g)
    per_group_class = np.zeros((g, num_classes))
    np.add.at(per_group_class, (inverse, y), 1.0)
    class_counts = counts @ per_group_class  # [B, C]
    total = class_counts.sum(axis=1)
    return percentile_ci(entropy(class_counts) - (counts @ ce_sums) / total, level)
