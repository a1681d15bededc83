"""Rank-based label-free measures of a representation, as pure functions of arrays.

The field's label-free competitors of the MI bounds: statistics of a whole feature matrix,
fitted to nothing (RankMe, alpha-ReQ, LiDAR) or fitted once in closed form (PWCCA), so each
is one eigendecomposition, not an estimator bank.

* :func:`rankme` - RankMe (Garrido et al., "RankMe: Assessing the downstream performance of
  pretrained self-supervised representations by their rank", ICML 2023).
* :func:`alpha_req` - alpha-ReQ (Agrawal et al., "alpha-ReQ: Assessing representation quality
  in self-supervised learning by measuring eigenspectrum decay", NeurIPS 2022).
* :func:`lidar` - LiDAR (Thilak et al., "LiDAR: Sensing linear probing performance in joint
  embedding SSL architectures", ICLR 2024).
* :func:`pwcca` - projection-weighted CCA (Morcos, Raghu & Bengio, "Insights on
  representational similarity in neural networks with canonical correlation", NeurIPS 2018),
  as Pasad, Chou & Livescu ("Layer-wise analysis of a self-supervised speech representation
  model", ASRU 2021) use it between a layer and its log-mel input.

Every function takes optional row ``weights`` [N] (multiplicities: a row of weight 2 counts
as two copies of it), so a bootstrap replicate that draws an utterance twice is the statistic
with that utterance's rows weighted 2. The ``*_influence`` functions return the statistic and
its influence function on the rows, IF_i = N * d statistic / d w_i at w = 1 (the rows' first-
order effect; they sum to 0, as every statistic here is unchanged by scaling all weights).
A replicate with utterance counts c is then, to first order, statistic + sum_i c_i IF_i /
sum_i c_i: the interval the pipeline reports (``bootstrap.mean_ci`` of statistic + IF over
utterances). That linearises the bootstrap rather than recomputing an eigendecomposition per
replicate: one per layer instead of ~1000, and free of the downward pull a recomputed spectral
entropy gets from duplicated utterances (the same reason ``bootstrap.probe_bound_ci``
linearises H(Y)). ``tests/test_spectral.py`` checks every IF against finite differences of the
weighted statistic.

Eigendecompositions are numpy float64 (LAPACK): D x D matrices, D <= a few thousand, where
float32 would lose the small eigenvalues that alpha-ReQ fits.
"""

from __future__ import annotations

import dataclasses

import numpy as np

EPS = 1e-7           # RankMe's epsilon, added to every normalised singular value
ALPHA_RANKS = (4, 100)   # alpha-ReQ's fit range (1-based ranks, inclusive), clipped to D
LIDAR_DELTA = 1e-4   # LiDAR's within-scatter ridge, relative to its mean eigenvalue


# ----------------------------------------------------------------------------- checks

def _matrix(z, name: str) -> np.ndarray:
    """z as float64 [N, D] with N >= 2 finite rows, or an error naming ``name``."""
    z = np.asarray(z)
    if z.ndim != 2 or z.shape[0] < 2 or z.shape[1] < 1:
        raise ValueError(f"{name} has shape {z.shape}: expected [N, D] with N >= 2 rows")
    z = z.astype(np.float64)
    if not np.isfinite(z).all():
        raise ValueError(f"{name} {z.shape} holds NaN or inf")
    return z


def _weights(weights, n: int, name: str = "weights") -> np.ndarray:
    """Row multiplicities [n] as float64 (None = all 1), >= 0 with a positive sum."""
    if weights is None:
        return np.ones(n)
    w = np.asarray(weights, np.float64)
    if w.shape != (n,):
        raise ValueError(f"{name} has shape {w.shape}: expected ({n},), one per row")
    if (w < 0).any() or not w.sum() > 0 or not np.isfinite(w).all():
        raise ValueError(f"{name}: expected finite multiplicities >= 0 with a positive sum")
    return w


def _moments(z: np.ndarray, w: np.ndarray, center: bool):
    """(mean [D], eigenvalues [D] descending, eigenvectors [D, D]) of the weighted second
    moment sum_i w_i (z_i - m)(z_i - m)^T / sum_i w_i; m = the weighted mean, or 0 when not
    ``center``. Eigenvalues are clipped at 0 (rounding)."""
    mean = (w @ z) / w.sum() if center else np.zeros(z.shape[1])
    zc = z - mean
    g = (zc * (w / w.sum())[:, None]).T @ zc
    lam, vec = np.linalg.eigh((g + g.T) / 2)
    return mean, np.maximum(lam[::-1], 0.0), vec[:, ::-1]


# ----------------------------------------------------------------------------- smooth rank

def smooth_rank(values, eps: float = EPS) -> float:
    """exp(-sum_k p_k log p_k), p_k = v_k / sum(v) + eps: the effective number of non-zero
    entries of values [K] >= 0 (K for a flat vector, r for r equal entries and zeros). RankMe's
    and LiDAR's score (Garrido et al. 2023, eq. 1; Roy & Vetterli 2007 without eps)."""
    return _smooth_rank_and_grad(np.asarray(values, np.float64), eps)[0]


def _smooth_rank_and_grad(v: np.ndarray, eps: float):
    """(smooth rank f, df/dv [K]): with H = -sum p log p, dH/dv_j = (-(log p_j + 1) +
    sum_k (log p_k + 1)(p_k - eps)) / sum(v) and df = f dH."""
    if v.ndim != 1 or v.size == 0 or (v < 0).any() or not v.sum() > 0:
        raise ValueError(f"smooth rank of values {v.shape}: expected a non-empty vector >= 0 "
                         f"with a positive sum")
    total = v.sum()
    p = v / total + eps
    logp1 = np.log(p) + 1.0
    f = float(np.exp(-np.sum(p * np.log(p))))
    grad = f * (-logp1 + np.sum(logp1 * (p - eps))) / total
    return f, grad


# ----------------------------------------------------------------------------- RankMe

def rankme(z, *, weights=None, eps: float = EPS) -> float:
    """RankMe(Z) = exp(-sum_k p_k log p_k), p_k = s_k / sum(s) + eps, s = the singular values of
    the frame features z [N, D] as they are (not centred, as published).

    Between 1 and min(N, D): about D for isotropic data, about r for data of rank r. Garrido
    et al. (ICML 2023) compare runs of one method by it (higher = more dimensions used);
    weights [N]: row multiplicities (module docstring).
    """
    return rankme_influence(z, weights=weights, eps=eps)[0]


def rankme_influence(z, *, weights=None, eps: float = EPS):
    """(RankMe, IF [N]). With G = sum_i w_i z_i z_i^T / sum w (eigenpairs lambda_k, v_k) and
    s_k = sqrt(lambda_k): N d lambda_k / d w_i = (z_i . v_k)^2 - lambda_k, so IF_i =
    sum_k dRankMe/ds_k ((z_i . v_k)^2 - lambda_k) / (2 s_k); directions with s_k = 0 hold no
    row and stay 0 under any reweighting (their term is 0)."""
    z = _matrix(z, "rankme: z")
    w = _weights(weights, z.shape[0], "rankme: weights")
    _, lam, vec = _moments(z, w, center=False)
    s = np.sqrt(lam)
    value, grad = _smooth_rank_and_grad(s, eps)
    live = s > s[0] * 1e-9
    coef = np.where(live, grad / (2 * np.where(live, s, 1.0)), 0.0)          # [D]
    proj = (z @ vec) ** 2                                                    # [N, D]
    influence = proj @ coef - np.sum(coef * lam)
    return value, influence


# ----------------------------------------------------------------------------- alpha-ReQ

@dataclasses.dataclass(frozen=True)
class PowerLawFit:
    """alpha-ReQ's fit: alpha, the 1-based ranks [lo, hi] it used, and its weighted R^2."""

    alpha: float
    ranks: tuple[int, int]
    r2: float


def alpha_req(z, *, ranks=ALPHA_RANKS, weights=None) -> float:
    """alpha-ReQ: the decay exponent alpha of the PCA eigenspectrum, lambda_i ~ c * i^-alpha.

    lambda_1 >= lambda_2 >= ... are the eigenvalues of the covariance of z [N, D] (centred);
    alpha = -slope of the least-squares fit of log lambda_i on log i, each rank weighted 1/i
    (so every octave of ranks counts about the same), over the 1-based ranks ``ranks`` =
    (lo, hi) inclusive, clipped to D and to the non-zero eigenvalues (the reference code's
    fit, Agrawal et al. NeurIPS 2022; the run schema's default is ranks 4..100). Agrawal et al. find the
    best downstream accuracy near alpha = 1; smaller = a flatter, whiter spectrum, larger = a
    few dimensions dominate. weights [N]: row multiplicities.
    """
    return alpha_req_influence(z, ranks=ranks, weights=weights)[0].alpha


def _power_law_fit(lam: np.ndarray, ranks):
    """(PowerLawFit, a [D]) for eigenvalues lam [D] (descending): alpha = sum_i a_i log lam_i,
    a_i = -w_i (x_i - xbar) / sum_j w_j (x_j - xbar)^2, x = log i, w = 1/i, xbar = the
    w-weighted mean of x (a is 0 outside the fitted ranks)."""
    try:
        lo, hi = (int(r) for r in ranks)
    except (TypeError, ValueError):
        raise ValueError(f"alpha_req: ranks {ranks!r}: expected (lo, hi), 1-based") from None
    if not 1 <= lo < hi:
        raise ValueError(f"alpha_req: ranks ({lo}, {hi}): expected 1 <= lo < hi")
    positive = int(np.sum(lam > lam[0] * 1e-12)) if lam[0] > 0 else 0
    top = min(hi, positive)
    if top - lo + 1 < 3:
        raise ValueError(f"alpha_req: ranks ({lo}, {hi}) leave {max(top - lo + 1, 0)} non-zero "
                         f"eigenvalues of {lam.size} (dimension {lam.size}, {positive} non-zero) "
                         f"to fit: need >= 3 (lower ranks[0])")
    i = np.arange(lo, top + 1, dtype=np.float64)
    x, wt, y = np.log(i), 1.0 / i, np.log(lam[lo - 1:top])
    xbar = np.sum(wt * x) / wt.sum()
    sxx = np.sum(wt * (x - xbar) ** 2)
    a = np.zeros(lam.size)
    a[lo - 1:top] = -wt * (x - xbar) / sxx
    alpha = float(a[lo - 1:top] @ y)
    ybar = np.sum(wt * y) / wt.sum()
    resid = y - (ybar - alpha * (x - xbar))
    r2 = 1.0 - np.sum(wt * resid ** 2) / max(np.sum(wt * (y - ybar) ** 2), 1e-300)
    return PowerLawFit(alpha, (lo, top), float(r2)), a


def alpha_req_influence(z, *, ranks=ALPHA_RANKS, weights=None):
    """(PowerLawFit, IF [N] of alpha). alpha = sum_k a_k log lambda_k (:func:`alpha_req`) and, for
    the weighted covariance, N d lambda_k / d w_i = ((z_i - mean) . v_k)^2 - lambda_k, so
    IF_i = sum_k a_k (((z_i - mean) . v_k)^2 - lambda_k) / lambda_k."""
    z = _matrix(z, "alpha_req: z")
    w = _weights(weights, z.shape[0], "alpha_req: weights")
    mean, lam, vec = _moments(z, w, center=True)
    fit, a = _power_law_fit(lam, ranks)
    used = np.flatnonzero(a)
    coef = a[used] / lam[used]
    proj = ((z - mean) @ vec[:, used]) ** 2
    return fit, proj @ coef - np.sum(coef * lam[used])


# ----------------------------------------------------------------------------- LiDAR

def lidar(views, *, delta: float = LIDAR_DELTA, eps: float = EPS, weights=None) -> float:
    """LiDAR: the smooth rank (:func:`smooth_rank`) of the eigenvalues of
    Sigma_w^-1/2 Sigma_b Sigma_w^-1/2 for views [n, q, D] (n items, q >= 2 views of each).

    mu_x = the mean of item x's views, mu = the mean of the mu_x;
    Sigma_b = mean_x (mu_x - mu)(mu_x - mu)^T (between items);
    Sigma_w = mean_x sum_j (e_xj - mu_x)(e_xj - mu_x)^T / (q - 1)
              + delta * tr(Sigma_w) / D * I (within items, ridged).
    High when many directions separate items more than they separate views of one item (the
    LDA view of linear probing: Thilak et al., ICLR 2024). The 1/n vs 1/(n - 1) of the
    covariances cancels (a smooth rank ignores scale). delta is relative to Sigma_w's mean
    eigenvalue, so layers of different scales get the same ridge (the paper's delta is
    absolute, for embeddings of one scale). weights [n]: item multiplicities.
    """
    return lidar_influence(views, delta=delta, eps=eps, weights=weights)[0]


def _views(views) -> np.ndarray:
    v = np.asarray(views)
    if v.ndim != 3 or v.shape[0] < 2 or v.shape[1] < 2 or v.shape[2] < 1:
        raise ValueError(f"lidar: views has shape {v.shape}: expected [n, q, D], n >= 2 items "
                         f"with q >= 2 views each")
    v = v.astype(np.float64)
    if not np.isfinite(v).all():
        raise ValueError(f"lidar: views {v.shape} holds NaN or inf")
    return v


def lidar_influence(views, *, delta: float = LIDAR_DELTA, eps: float = EPS, weights=None):
    """(LiDAR, IF [n] over items). With V the generalised eigenvectors (Sigma_b v = lambda
    Sigma_w v, v^T Sigma_w v = 1), S_x item x's within scatter and dev_x = mu_x - mu:
    n d lambda_k / d w_x = (v_k . dev_x)^2 - lambda_k
        - lambda_k (v_k^T S_x v_k - v_k^T Sigma_w' v_k + delta (tr S_x - tr Sigma_w') |v_k|^2 / D)
    (Sigma_w' without the ridge), and IF_x = sum_k dLiDAR/dlambda_k of that."""
    e = _views(views)
    n, q, d = e.shape
    if not delta > 0:
        raise ValueError(f"lidar: delta = {delta}: expected > 0 (the ridge on Sigma_w)")
    w = _weights(weights, n, "lidar: weights")
    pw = w / w.sum()
    mu_x = e.mean(axis=1)                                       # [n, D]
    mu = pw @ mu_x
    dev = mu_x - mu
    within = e - mu_x[:, None]                                  # [n, q, D]
    sigma_b = (dev * pw[:, None]).T @ dev
    flat = within.reshape(n * q, d)
    sigma_w = (flat * np.repeat(pw, q)[:, None]).T @ flat / (q - 1)
    trace_w = float(np.trace(sigma_w))
    if not trace_w > 0:
        raise ValueError(f"lidar: the {q} views of every item are identical (within-item "
                         f"scatter 0): LiDAR needs views that differ")
    ridge = delta * trace_w / d
    ew, uw = np.linalg.eigh(sigma_w + ridge * np.eye(d))
    whiten = uw / np.sqrt(np.maximum(ew, ridge * 1e-3))          # Sigma_w^-1/2 up to rotation
    m = whiten.T @ sigma_b @ whiten
    lam, y = np.linalg.eigh((m + m.T) / 2)
    lam = np.maximum(lam, 0.0)
    vec = whiten @ y                                             # [D, D]: v^T Sigma_w v = 1
    value, grad = _smooth_rank_and_grad(lam, eps)
    pb = (dev @ vec) ** 2                                        # [n, D]
    pwx = np.einsum("xqk->xk", (within @ vec) ** 2) / (q - 1)    # v_k^T S_x v_k
    tr_x = np.einsum("xqd->x", within ** 2) / (q - 1)            # tr S_x
    vw = np.einsum("dk,de,ek->k", vec, sigma_w, vec)             # v_k^T Sigma_w' v_k
    norm2 = np.sum(vec ** 2, axis=0)
    dlam = (pb - lam) - lam * (pwx - vw + ridge / trace_w * (tr_x[:, None] - trace_w) * norm2)
    return value, dlam @ grad


# ----------------------------------------------------------------------------- PWCCA

@dataclasses.dataclass(frozen=True)
class CCA:
    """A CCA fitted on rows of a [N, Da] and b [N, Db]: the means, the canonical directions
    dir_a [Da, c], dir_b [Db, c] (column k of each is the k-th canonical pair), the fitted
    canonical correlations rho [c] (regularised ones when reg > 0) and Morcos et al.'s
    projection weights [c] of a's side (sum 1)."""

    mean_a: np.ndarray
    mean_b: np.ndarray
    dir_a: np.ndarray
    dir_b: np.ndarray
    rho: np.ndarray
    weights: np.ndarray
    reg: float


def _inv_sqrt(eig, reg: float):
    """Whitening W [D, r] of a covariance shrunk by ``reg``, from its
    eigendecomposition ``eig`` = (lam [D], vec [D, D]): W^T C(reg) W = I over the r
    eigenvalues above 1e-12 of the largest (a pseudo-inverse square root; zero-variance
    directions carry no correlation and are dropped, as Morcos et al. drop dead neurons)."""
    lam, vec = eig
    lam = (1.0 - reg) * lam + reg * lam.mean()   # C(reg) = (1 - reg) C + reg tr(C) / D I
    keep = lam > max(lam.max(), 0.0) * 1e-12
    if not keep.any():
        raise ValueError("cca: a view has zero variance")
    return vec[:, keep] / np.sqrt(lam[keep])


@dataclasses.dataclass(frozen=True)
class CCAView:
    """One side of a CCA on its fit rows: the weighted mean [D], the centred rows [N, D], the
    normalised row weights [N], the covariance [D, D] and its eigendecomposition. Built once
    by :func:`cca_view` when several CCAs share a side (every layer against one log-mel)."""

    mean: np.ndarray
    centred: np.ndarray
    row_weights: np.ndarray
    cov: np.ndarray
    eig: tuple


def cca_view(x, *, weights=None, name: str = "cca: x") -> CCAView:
    """The :class:`CCAView` of rows x [N, D] (weights [N]: row multiplicities)."""
    x = _matrix(x, name)
    pw = _weights(weights, x.shape[0], f"{name} weights")
    pw = pw / pw.sum()
    mean = pw @ x
    xc = x - mean
    cov = (xc * pw[:, None]).T @ xc
    return CCAView(mean, xc, pw, cov, np.linalg.eigh((cov + cov.T) / 2))


def _views_of(a, b, weights):
    """(CCAView of a, CCAView of b, C_ab); b may already be a CCAView (its weights then
    weigh a's rows too)."""
    if isinstance(b, CCAView):
        if weights is not None:
            raise ValueError("cca: weights come with b's CCAView; pass weights=None")
        vb = b
        weights = b.row_weights
    else:
        vb = cca_view(b, weights=weights, name="cca: b")
    va = cca_view(a, weights=weights, name="cca: a")
    if va.centred.shape[0] != vb.centred.shape[0]:
        raise ValueError(f"cca: a {va.centred.shape} and b {vb.centred.shape} must have the "
                         f"same rows")
    return va, vb, (va.centred * va.row_weights[:, None]).T @ vb.centred


def cca_fit(a, b, *, reg: float = 0.0, weights=None) -> CCA:
    """Regularised CCA of a [N, Da] and b [N, Db] and Morcos et al.'s projection weights.

    C_aa, C_bb, C_ab: the (weighted) covariances; each auto-covariance is shrunk towards its
    mean eigenvalue, C_aa(reg) = (1 - reg) C_aa + reg tr(C_aa) / Da I, reg in [0, 1) (scale-free,
    so one grid serves every layer). The SVD U S V^T of C_aa(reg)^-1/2 C_ab C_bb(reg)^-1/2
    gives the c = min(rank a, rank b) canonical pairs: dir_a = C_aa(reg)^-1/2 U, dir_b =
    C_bb(reg)^-1/2 V, rho = S. Weights (Morcos et al. 2018, ``compute_pwcca``): with H =
    (a - mean) dir_a [N, c] the canonical variates and Q R = H its QR (Gram-Schmidt in order
    of rho), weight_k ~ sum_j |Q_k . a_j| over a's centred columns a_j: how much of a each
    canonical direction accounts for. Computed from covariances: Q^T a = R^-T dir_a^T C_aa N.
    (Morcos et al. weight the side with fewer neurons and project uncentred activations; here
    the side is a, centred as the CCA sees it.) b may be a :class:`CCAView`.
    """
    if not 0.0 <= reg < 1.0:
        raise ValueError(f"cca: reg = {reg}: expected a shrinkage in [0, 1)")
    return _cca_from_views(*_views_of(a, b, weights), reg)


def _cca_from_views(va: CCAView, vb: CCAView, cab: np.ndarray, reg: float) -> CCA:
    wa, wb = _inv_sqrt(va.eig, reg), _inv_sqrt(vb.eig, reg)
    u, s, vt = np.linalg.svd(wa.T @ cab @ wb, full_matrices=False)
    dir_a, dir_b = wa @ u, wb @ vt.T
    gram = dir_a.T @ va.cov @ dir_a                                # H^T H / N
    r = np.linalg.cholesky(gram + np.eye(gram.shape[0]) * 1e-12 * np.trace(gram)).T
    qa = np.linalg.solve(r.T, dir_a.T @ va.cov)                    # Q^T a / sqrt(N)  [c, Da]
    weights = np.abs(qa).sum(axis=1)
    return CCA(va.mean, vb.mean, dir_a, dir_b, s, weights / weights.sum(), float(reg))


def _variates(cca: CCA, a, b, weights):
    a, b = _matrix(a, "pwcca: a"), _matrix(b, "pwcca: b")
    if a.shape[0] != b.shape[0] or a.shape[1] != cca.dir_a.shape[0] \
            or b.shape[1] != cca.dir_b.shape[0]:
        raise ValueError(f"pwcca: a {a.shape}, b {b.shape}: expected [N, {cca.dir_a.shape[0]}] "
                         f"and [N, {cca.dir_b.shape[0]}] as fitted")
    w = _weights(weights, a.shape[0], "pwcca: weights")
    return a @ cca.dir_a, b @ cca.dir_b, w / w.sum()


def pwcca_score_influence(cca: CCA, a, b, *, weights=None):
    """(PWCCA, IF [N]) of a fitted CCA on rows a [N, Da], b [N, Db] (held out, or the fit's own):
    PWCCA = sum_k weight_k rho_k, rho_k = the correlation of the k-th canonical variates on
    these rows; weights fixed by the fit. With u, v the standardised variates,
    N d rho_k / d w_i = u_ik v_ik - rho_k (u_ik^2 + v_ik^2) / 2."""
    ha, hb, pw = _variates(cca, a, b, weights)
    ha, hb = ha - pw @ ha, hb - pw @ hb
    sa, sb = np.sqrt(pw @ ha ** 2), np.sqrt(pw @ hb ** 2)
    ok = (sa > 0) & (sb > 0)
    u = ha[:, ok] / sa[ok]
    v = hb[:, ok] / sb[ok]
    rho = pw @ (u * v)
    wk = cca.weights[ok]
    influence = (u * v - rho * (u ** 2 + v ** 2) / 2) @ wk
    return float(rho @ wk), influence


def pwcca(a, b, *, reg: float = 0.0, held_out=None) -> float:
    """Projection-weighted CCA between a [N, Da] and b [N, Db]: sum_k weight_k rho_k over the
    canonical pairs of :func:`cca_fit` (weights: how much of a each canonical direction of a
    accounts for; Morcos et al. 2018). 1 when b is an invertible linear map of a; near 0 for
    independent a and b (held out: ~0; in-sample: ~sqrt(D / N), CCA's fit to noise).

    held_out: optional (a', b'): the directions and weights are fitted on (a, b) and the
    correlations measured on (a', b'), as Pasad et al. report CCA on held-out data.
    """
    cca = cca_fit(a, b, reg=reg)
    rows = (a, b) if held_out is None else held_out
    return pwcca_score_influence(cca, *rows)[0]


def cca_dev_choice(a_fit, b_fit, a_dev, b_dev, regs, *, weights=None):
    """(CCA, dev PWCCA) at the shrinkage of ``regs`` with the highest PWCCA on the dev rows,
    each fitted on the fit rows (a_fit [N, Da], b_fit [N, Db] or its :class:`CCAView`). The
    covariances and their eigendecompositions are computed once for the whole grid (shrinking
    towards the mean eigenvalue keeps the eigenvectors)."""
    regs = [float(r) for r in regs]
    if not regs or not all(0.0 <= r < 1.0 for r in regs):
        raise ValueError(f"cca: regs {regs}: expected a non-empty list of shrinkages in [0, 1)")
    views = _views_of(a_fit, b_fit, weights)
    best = None
    for reg in regs:
        cca = _cca_from_views(*views, reg)
        dev = pwcca_score_influence(cca, a_dev, b_dev)[0]
        if best is None or dev > best[1]:
            best = (cca, dev)
    return best
