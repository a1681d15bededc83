"""Synthetic sources whose self-supervised targets have known information content.

Gaussian VAR(1): x_{t+1} = A x_t + e_t, e_t ~ N(0, Q) iid, spectral radius of A below 1.
  * Stationary covariance S solves the discrete Lyapunov equation S = A S A^T + Q.
  * x_{t+n} = A^n x_t + sum_{k<n} A^k e_{t+n-1-k}: given x_t (which, Markov, summarises the whole
    past) x_{t+n} is Gaussian with covariance C_n = sum_{k<n} A^k Q A^kT, so
    I(past; x_{t+n}) = I(x_t; x_{t+n}) = 1/2 (log det S - log det C_n) nats, which is also the
    Gaussian MI of the joint covariance [[S, S A^nT], [A^n S, S]] (``known.gaussian_mi``, used here).
    The best predictor is linear (E[x_{t+n} | past] = A^n x_t): APC with a Gaussian p_psi can reach
    the bound exactly.

Hidden-Markov source: states s_t follow a Markov chain with transition matrix P (started from its
stationary distribution pi, so every frame's state is distributed as pi); frames are
x_t = mu[s_t] + noise_std * N(0, I). H(s_t) = H(pi) is the entropy of the frame-level state.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg

from speechmi_jax.estimators.known import gaussian_mi
from speechmi_jax.estimators.probe import entropy_from_counts
from speechmi_jax.units import nats_to_bits


def _check_var(a, noise_cov):
    a = np.asarray(a, np.float64)
    q = np.asarray(noise_cov, np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"A: expected a square matrix [D, D], got shape {a.shape}")
    if q.shape != a.shape:
        raise ValueError(f"noise_cov: expected shape {a.shape} (like A), got {q.shape}")
    if not np.allclose(q, q.T) or np.linalg.eigvalsh(q).min() <= 0:
        raise ValueError("noise_cov: expected a symmetric positive-definite matrix")
    rho = np.abs(np.linalg.eigvals(a)).max()
    if rho >= 1:
        raise ValueError(f"A: spectral radius {rho:.4f} >= 1, the VAR(1) process has no stationary law")
    return a, q


def var_stationary_cov(a, noise_cov) -> np.ndarray:
    """Stationary covariance S [D, D] of x_{t+1} = A x_t + e, e ~ N(0, Q): S = A S A^T + Q."""
    a, q = _check_var(a, noise_cov)
    s = linalg.solve_discrete_lyapunov(a, q)
    return 0.5 * (s + s.T)


def var_predictive_mi_nats(a, noise_cov, n: int) -> float:
    """I(x_{<=t}; x_{t+n}) in nats for the stationary VAR(1) process, n >= 1 steps ahead."""
    if n < 1:
        raise ValueError(f"n={n}: expected a prediction shift >= 1")
    a, q = _check_var(a, noise_cov)
    s = var_stationary_cov(a, q)
    an = np.linalg.matrix_power(a, n)
    cross = s @ an.T  # Cov(x_t, x_{t+n})
    joint = np.block([[s, cross], [cross.T, s]])
    return gaussian_mi(joint, a.shape[0])


def sample_var(a, noise_cov, num_seqs: int, length: int, seed: int = 0) -> np.ndarray:
    """Draws [num_seqs, length, D] float32 from the stationary VAR(1) process (x_0 ~ N(0, S))."""
    a, q = _check_var(a, noise_cov)
    d = a.shape[0]
    rng = np.random.default_rng(seed)
    ls = np.linalg.cholesky(var_stationary_cov(a, q))
    lq = np.linalg.cholesky(q)
    x = np.empty((num_seqs, length, d))
    x[:, 0] = rng.standard_normal((num_seqs, d)) @ ls.T
    for t in range(1, length):
        x[:, t] = x[:, t - 1] @ a.T + rng.standard_normal((num_seqs, d)) @ lq.T
    return x.astype(np.float32)


def _check_trans(trans):
    p = np.asarray(trans, np.float64)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"trans: expected a square matrix [S, S], got shape {p.shape}")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError(f"trans: rows must be probability vectors (non-negative, summing to 1); "
                         f"row sums {p.sum(axis=1)}")
    return p


def hmm_stationary(trans) -> np.ndarray:
    """Stationary distribution pi [S] of a transition matrix (pi P = pi); needs it unique."""
    p = _check_trans(trans)
    s = p.shape[0]
    # pi (P - I) = 0 with sum(pi) = 1, least squares over the stacked system.
    lhs = np.vstack([(p - np.eye(s)).T, np.ones((1, s))])
    pi, _, rank, _ = np.linalg.lstsq(lhs, np.r_[np.zeros(s), 1.0], rcond=None)
    if rank < s or np.abs(pi @ p - pi).max() > 1e-8 or (pi < -1e-10).any():
        raise ValueError("trans: no unique stationary distribution (chain not irreducible?)")
    return np.clip(pi, 0.0, None) / np.clip(pi, 0.0, None).sum()


def hmm_state_entropy_bits(trans) -> float:
    """H(pi) in bits: the entropy of one frame's hidden state under the stationary law."""
    return float(nats_to_bits(entropy_from_counts(hmm_stationary(trans), "plugin")))


def sample_hmm(trans, means, noise_std: float, num_seqs: int, length: int, seed: int = 0):
    """Draws (x [N, T, D] float32, states [N, T] int32) from the stationary hidden-Markov source."""
    p = _check_trans(trans)
    mu = np.asarray(means, np.float64)
    if mu.ndim != 2 or mu.shape[0] != p.shape[0]:
        raise ValueError(f"means: expected [S={p.shape[0]}, D], got shape {mu.shape}")
    rng = np.random.default_rng(seed)
    cum = np.cumsum(p, axis=1)
    cum[:, -1] = 1.0
    states = np.empty((num_seqs, length), np.int32)
    states[:, 0] = rng.choice(p.shape[0], size=num_seqs, p=hmm_stationary(p))
    for t in range(1, length):
        u = rng.random(num_seqs)
        states[:, t] = (u[:, None] >= cum[states[:, t - 1]]).sum(axis=1)
    x = mu[states] + noise_std * rng.standard_normal((num_seqs, length, mu.shape[1]))
    return x.astype(np.float32), states
