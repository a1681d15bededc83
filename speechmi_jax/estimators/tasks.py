"""Known-MI tasks for generic estimators: samplers with closed-form I(X; Y) in nats.

Families of the "Beyond Normal" benchmark (Czyz et al., NeurIPS 2023), with samplers written
here (the truths are closed forms; no data is read):

* multinormal: (X, Y) ~ N(0, C); I = -1/2 log det(I - Sxx^-1 Sxy Syy^-1 Syx) (`known.gaussian_mi`).
  "dense": every off-diagonal entry of C is 0.5; "two-pair" (sparse): x_i ~ y_i with correlation
  0.8 for i < 2, I = -log(1 - 0.64) = 1.022 nats; "1x1": one pair, correlation 0.75.
* multivariate Student-t with identity dispersion and nu degrees of freedom: X and Y are
  uncorrelated but dependent through the shared scale. I = I_gauss (0 here) + c(nu, dx, dy),

      c = log G(nu/2) + log G((nu+dx+dy)/2) - log G((nu+dx)/2) - log G((nu+dy)/2)
          + (nu+dx)/2 psi((nu+dx)/2) + (nu+dy)/2 psi((nu+dy)/2)
          - nu/2 psi(nu/2) - (nu+dx+dy)/2 psi((nu+dx+dy)/2)

  (G the gamma function, psi the digamma; Arellano-Valle, Contreras-Reyes & Genton 2013).
* invertible maps of one variable keep I: asinh and the half-cube x |x|^(1/2) per coordinate,
  and the spiral x -> R(speed * |x|^2) x (applied to X only), a rotation in the (x_0, x_1) plane
  by an angle that grows with the squared norm (invertible: the rotation keeps |x|, so
  R(-speed * |x|^2) undoes it).
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np
from scipy import special

from speechmi_jax.estimators import known


@dataclasses.dataclass(frozen=True)
class Task:
    """A joint distribution with known I(X; Y). sample(n, seed) -> (x [n, dx], y [n, dy]) float32."""

    name: str
    dim_x: int
    dim_y: int
    mi_nats: float
    sample: Callable[[int, int], tuple[np.ndarray, np.ndarray]]


def student_t_mi(nu: float, dx: int, dy: int) -> float:
    """I(X; Y) in nats of a multivariate Student-t with identity dispersion (see module doc)."""
    g, psi = special.gammaln, special.digamma
    a, b, c = (nu + dx) / 2, (nu + dy) / 2, (nu + dx + dy) / 2
    return float(g(nu / 2) + g(c) - g(a) - g(b) + a * psi(a) + b * psi(b) - nu / 2 * psi(nu / 2) - c * psi(c))


def sample_student_t(nu: float, dx: int, dy: int, n: int, seed: int):
    """n draws of a Student-t with identity dispersion: z / sqrt(w / nu), w ~ chi2(nu)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, dx + dy)) / np.sqrt(rng.chisquare(nu, size=(n, 1)) / nu)
    return z[:, :dx].astype(np.float32), z[:, dx:].astype(np.float32)


def uniform_cov(dx: int, dy: int, off_diagonal: float = 0.5) -> np.ndarray:
    """The "dense" task's covariance: unit variances, every other entry `off_diagonal`."""
    d = dx + dy
    return np.full((d, d), off_diagonal) + (1 - off_diagonal) * np.eye(d)


def half_cube(x):
    """x |x|^(1/2): invertible per coordinate, heavier tails."""
    return x * np.sqrt(np.abs(x))


def spiral(x, speed: float = 1 / 3):
    """Rotates x [n, d >= 2] in the (x_0, x_1) plane by speed * |x|^2 (invertible, see module doc)."""
    x = np.asarray(x, np.float64)
    theta = speed * np.sum(x**2, axis=1)
    c, s = np.cos(theta), np.sin(theta)
    out = x.copy()
    out[:, 0] = c * x[:, 0] - s * x[:, 1]
    out[:, 1] = s * x[:, 0] + c * x[:, 1]
    return out


def _gaussian_task(name, cov, dx, map_x=None, map_y=None) -> Task:
    def sample(n, seed):
        x, y = known.sample_gaussian(cov, dx, n, seed)
        x = x if map_x is None else map_x(x)
        y = y if map_y is None else map_y(y)
        return np.asarray(x, np.float32), np.asarray(y, np.float32)

    return Task(name, dx, len(cov) - dx, known.gaussian_mi(cov, dx), sample)


def _student_task(name, nu, dx, dy, map_xy=None) -> Task:
    def sample(n, seed):
        x, y = sample_student_t(nu, dx, dy, n, seed)
        if map_xy is not None:
            x, y = map_xy(x), map_xy(y)
        return np.asarray(x, np.float32), np.asarray(y, np.float32)

    return Task(name, dx, dy, student_t_mi(nu, dx, dy), sample)


def beyond_normal_tasks() -> list[Task]:
    """The eight task families used to check `estimate_mi` (benchmarks/bench_known_mi.py)."""
    pair = known.two_pair_cov(5, 5, n_pairs=2, rho=0.8)
    return [
        _gaussian_task("normal-1x1", known.two_pair_cov(1, 1, n_pairs=1, rho=0.75), 1),
        _gaussian_task("dense-5x5", uniform_cov(5, 5), 5),
        _gaussian_task("dense-25x25", uniform_cov(25, 25), 25),
        _gaussian_task("sparse-2pair-5x5", pair, 5),
        _gaussian_task("half-cube-5x5", pair, 5, half_cube, half_cube),
        _gaussian_task("spiral-5x5", pair, 5, spiral),
        _student_task("asinh-student-1x1-nu1", 1, 1, 1, np.arcsinh),
        _student_task("student-5x5-nu3", 3, 5, 5),
    ]


def task_by_name(name: str) -> Task:
    tasks = {t.name: t for t in beyond_normal_tasks()}
    if name not in tasks:
        raise ValueError(f"task {name!r}: expected one of {sorted(tasks)}")
    return tasks[name]
