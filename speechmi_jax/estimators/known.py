"""Distributions with known mutual information, for checking the estimators.

* Jointly Gaussian (X, Y): I = -1/2 log det(I - Sxx^-1 Sxy Syy^-1 Syx) nats (Cover & Thomas 8.5).
  "Two-pair" sparse tasks (Czyz et al. 2023, "Beyond Normal"): pairs (x_i, y_i) with correlation
  rho, I = -n_pairs/2 log(1 - rho^2); rho = 0.8, two pairs -> 1.022 nats.
* MI-preserving maps: any invertible map applied to X or Y separately keeps I(X; Y)
  (asinh, cube, the normal CDF).
* Categorical Y with Gaussian class conditionals sharing one covariance: the posterior p(y|z) is
  softmax-linear in z, so a linear probe can reach the Bayes cross-entropy; the truth
  I = H(Y) - E[-log p(Y|Z)] is computed by Monte Carlo with the exact posterior.
"""

from __future__ import annotations

import numpy as np
from scipy import special, stats


def gaussian_mi(cov: np.ndarray, dx: int) -> float:
    """Closed-form I(X; Y) in nats for (X, Y) ~ N(0, cov), X the first dx coordinates."""
    sxx, sxy, syy = cov[:dx, :dx], cov[:dx, dx:], cov[dx:, dx:]
    m = np.linalg.solve(sxx, sxy) @ np.linalg.solve(syy, sxy.T)
    return float(-0.5 * np.linalg.slogdet(np.eye(dx) - m)[1])


def two_pair_cov(dx: int, dy: int, n_pairs: int, rho: float) -> np.ndarray:
    """Covariance of the sparse task: x_i ~ y_i with correlation rho for i < n_pairs."""
    cov = np.eye(dx + dy)
    for i in range(n_pairs):
        cov[i, dx + i] = cov[dx + i, i] = rho
    return cov


def sample_gaussian(cov: np.ndarray, dx: int, n: int, seed: int):
    """n draws of (x [n, dx], y [n, dy]) float32."""
    z = np.random.default_rng(seed).multivariate_normal(np.zeros(len(cov)), cov, size=n)
    return z[:, :dx].astype(np.float32), z[:, dx:].astype(np.float32)


MAPS = {
    "identity": lambda x: x,
    "asinh": np.arcsinh,
    "cube": lambda x: x**3,
    "normal_cdf": stats.norm.cdf,
}


def class_gaussians(num_classes: int, dim: int, separation: float, seed: int):
    """(priors [C], means [C, D]) of a shared-identity-covariance class-conditional model."""
    rng = np.random.default_rng(seed)
    priors = rng.dirichlet(np.full(num_classes, 5.0))
    means = rng.normal(size=(num_classes, dim)) * separation
    return priors, means


def sample_classes(priors, means, n: int, seed: int):
    """y [n] ~ priors, z [n, D] ~ N(means[y], I) float32."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(priors), size=n, p=priors)
    return (means[y] + rng.normal(size=(n, means.shape[1]))).astype(np.float32), y


def class_gaussians_mi(priors, means, n: int = 400_000, seed: int = 12345) -> float:
    """Monte-Carlo I(Y; Z) in nats: H(Y) + E[log p(Y|Z)], exact posterior softmax-linear in z."""
    z, y = sample_classes(priors, means, n, seed)
    logits = np.log(priors) + z.astype(np.float64) @ means.T - 0.5 * (means**2).sum(1)
    log_post = logits - special.logsumexp(logits, axis=1, keepdims=True)
    h_y = -(priors * np.log(priors)).sum()
    return float(h_y + log_post[np.arange(n), y].mean())
