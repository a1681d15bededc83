"""The rank-based label-free measures (estimators/spectral.py): each statistic against a closed
form on data built to have it exactly, each influence function against finite differences of
the weighted statistic, the linearised bootstrap against the recomputed one, the selection
direction of their records, and one pipeline run that writes them with intervals."""

import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax.analysis import correlation, results
from speechmi_jax.estimators import bootstrap, spectral


def _orthonormal(rng, n, k, centred=True):
    """n x k with orthonormal columns (each orthogonal to the ones vector when centred)."""
    x = rng.standard_normal((n, k))
    if centred:
        x -= x.mean(axis=0)
    return np.linalg.qr(x)[0]


def _smooth_rank(v):
    p = np.asarray(v, float) / np.sum(v) + 1e-7
    return float(np.exp(-np.sum(p * np.log(p))))


# ----------------------------------------------------------------------------- RankMe

def test_rankme_of_a_known_spectrum_and_of_isotropic_and_rank_r_data():
    """Z with singular values exactly (4, 2, 1, 1, 0, 0), its first left singular vector the
    constant one (so Z has a large mean): RankMe = exp(H(s / sum s)) = 3.364. Wrong formulas
    read: eigenvalues s^2 instead of s 2.276, 2^H instead of e^H 2.318, Z centred first 2.828
    (each checked once)."""
    rng = np.random.default_rng(0)
    n = 60
    u = np.concatenate([np.full((n, 1), n ** -0.5), _orthonormal(rng, n, 5)], axis=1)
    s = np.array([4.0, 2.0, 1.0, 1.0, 0.0, 0.0])
    z = u @ np.diag(s) @ _orthonormal(rng, 6, 6, centred=False).T
    assert smi.rankme(z) == pytest.approx(_smooth_rank(s), rel=1e-6)
    assert smi.rankme(z) == pytest.approx(3.364, abs=1e-3)
    # isotropic in 16 dimensions: ~16; rank 5 embedded in 16: ~5
    iso = rng.standard_normal((4000, 16))
    assert 15.5 < smi.rankme(iso) <= 16.0
    low = rng.standard_normal((4000, 5)) @ _orthonormal(rng, 16, 5, centred=False).T
    assert 4.9 < smi.rankme(low) <= 5.0
    with pytest.raises(ValueError, match=r"rankme: z has shape \(5,\): expected \[N, D\]"):
        smi.rankme(np.ones(5))


# ----------------------------------------------------------------------------- alpha-ReQ

def _spectrum_data(rng, lam, n=500):
    """Rows whose covariance (1/n, centred) has exactly the eigenvalues lam [D]."""
    d = lam.size
    return _orthonormal(rng, n, d) @ np.diag(np.sqrt(n * lam)) @ _orthonormal(rng, d, d, False).T


def test_alpha_req_recovers_a_power_law_and_weights_ranks_by_one_over_i():
    """lambda_i = i^-1.3 exactly: alpha = 1.3 over ranks 4..100. Wrong formulas read: singular
    values instead of eigenvalues 0.65, ranks off by one (log(i - 1) or log(i + 1)) 1.205 or 1.386.
    A broken power law (i^-1 up to rank 20, i^-2 beyond) gives the 1/i-weighted fit 1.473
    (numpy's polyfit with weights 1/sqrt(i) on the residuals agrees); unweighted it would be
    1.683."""
    rng = np.random.default_rng(1)
    i = np.arange(1, 121, dtype=float)
    z = _spectrum_data(rng, i ** -1.3, n=300)
    assert smi.alpha_req(z) == pytest.approx(1.3, abs=1e-9)
    fit, _ = spectral.alpha_req_influence(z)
    assert fit.ranks == (4, 100) and fit.r2 == pytest.approx(1.0)
    # the fit range is clipped to D: D = 50 fits ranks 4..50
    assert spectral.alpha_req_influence(_spectrum_data(rng, i[:50] ** -0.8, n=300))[0].ranks == (4, 50)

    broken = np.where(i <= 20, i ** -1.0, 20.0 * i ** -2.0)
    got = smi.alpha_req(_spectrum_data(rng, broken, n=300))
    r = np.arange(4, 101)
    ref = -np.polyfit(np.log(r), np.log(broken[3:100]), 1, w=1 / np.sqrt(r))[0]
    unweighted = -np.polyfit(np.log(r), np.log(broken[3:100]), 1)[0]
    assert got == pytest.approx(ref, abs=1e-9) and got == pytest.approx(1.473, abs=1e-3)
    assert abs(unweighted - got) > 0.2
    with pytest.raises(ValueError, match=r"ranks \(4, 100\) leave 2 non-zero eigenvalues of 5"):
        smi.alpha_req(rng.standard_normal((100, 5)))


# ----------------------------------------------------------------------------- LiDAR

def test_lidar_of_views_built_with_known_scatters():
    """Two views mu_x +- w_x of n items, built so that Sigma_b = diag(b * s) and Sigma_w =
    diag(s) exactly (s anisotropic): the whitened ratio has eigenvalues b, and LiDAR =
    exp(H(b / sum b)) = 4.173. Wrong formulas read: no whitening (the spectrum of Sigma_b)
    3.872, the square roots of the eigenvalues (as RankMe's singular values) 5.312, Sigma_b as
    the covariance of all views instead of the view means 4.814 (each checked once)."""
    rng = np.random.default_rng(2)
    n = 400
    b = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2])
    s = np.array([1.0, 2.0, 4.0, 0.5, 1.0, 3.0])
    means = _orthonormal(rng, n, 6) @ np.diag(np.sqrt(n * b * s))
    half = _orthonormal(rng, n, 6) @ np.diag(np.sqrt(n * s / 2))
    views = np.stack([means + half, means - half], axis=1)            # [n, 2, 6]
    assert smi.lidar(views, delta=1e-9) == pytest.approx(_smooth_rank(b), rel=1e-6)
    assert smi.lidar(views, delta=1e-9) == pytest.approx(4.173, abs=1e-3)
    assert smi.lidar(views) == pytest.approx(_smooth_rank(b), rel=1e-4)  # delta = 1e-4
    with pytest.raises(ValueError, match="views of every item are identical"):
        smi.lidar(np.stack([means, means], axis=1))
    with pytest.raises(ValueError, match=r"views has shape \(400, 6\): expected \[n, q, D\]"):
        smi.lidar(means)


# ----------------------------------------------------------------------------- PWCCA

def test_pwcca_of_a_linear_map_independent_data_and_projection_weights():
    """A linear map of the same data: 1. Independent data, measured held out: ~0. a = (3 e1,
    e2), b = (e1, e3) with orthonormal e: canonical correlations (1, 0), and a's projections
    on the canonical directions 3 : 1, so PWCCA = 0.75. Wrong weights read: the plain mean of
    the correlations 0.5, squared projections (variance) 0.9, b's projections 0.5 (each
    checked once)."""
    rng = np.random.default_rng(3)
    a = rng.standard_normal((2000, 10))
    assert smi.pwcca(a, a @ rng.standard_normal((10, 14))) == pytest.approx(1.0, abs=1e-9)
    x, y = rng.standard_normal((4000, 10)), rng.standard_normal((4000, 8))
    held = (rng.standard_normal((4000, 10)), rng.standard_normal((4000, 8)))
    assert abs(smi.pwcca(x, y, held_out=held)) < 0.03
    assert 0.0 < smi.pwcca(x, y) < 0.15           # in-sample CCA fits some noise

    n = 300
    e = _orthonormal(rng, n, 3) * np.sqrt(n)
    a = np.stack([3 * e[:, 0], e[:, 1]], axis=1)
    b = np.stack([e[:, 0], e[:, 2]], axis=1)
    assert smi.pwcca(a, b) == pytest.approx(0.75, abs=1e-9)
    with pytest.raises(ValueError, match=r"cca: reg = 1.0: expected a shrinkage in \[0, 1\)"):
        smi.pwcca(a, b, reg=1.0)
    with pytest.raises(ValueError, match=r"cca: a \(300, 2\) and b \(299, 2\) must have the same rows"):
        smi.pwcca(a, b[1:])


def test_cca_dev_choice_picks_the_shrinkage_that_generalises():
    """Few fit rows per dimension: unregularised CCA fits noise and scores lower on dev than a
    shrunk one."""
    rng = np.random.default_rng(4)
    mix = rng.standard_normal((3, 40))

    def draw(n):
        latent = rng.standard_normal((n, 3))
        return (latent @ mix + 2 * rng.standard_normal((n, 40)),
                latent @ rng.standard_normal((3, 30)) + 2 * rng.standard_normal((n, 30)))
    (a, b), (ad, bd) = draw(120), draw(2000)
    cca, dev = spectral.cca_dev_choice(a, b, ad, bd, (0.0, 0.3, 0.9))
    scores = {r: spectral.pwcca(a, b, reg=r, held_out=(ad, bd)) for r in (0.0, 0.3, 0.9)}
    assert cca.reg == max(scores, key=scores.get) != 0.0 and dev == pytest.approx(max(scores.values()))


# ----------------------------------------------------------------------------- intervals

def _directional(stat, n, influence, rng, h=1e-5):
    """(finite-difference derivative of stat(weights) along a random direction u at w = 1,
    the influence function's prediction of it: u . IF / n)."""
    u = rng.standard_normal(n)
    return (stat(1 + h * u) - stat(1 - h * u)) / (2 * h), u @ influence / n


def test_influence_functions_match_finite_differences():
    """Each IF is the derivative of the weighted statistic (rows duplicated = weight 2) at
    w = 1; it breaks with RankMe's ds = dlambda / s (not / 2s), without alpha-ReQ's centring,
    LiDAR's within-item or ridge term (delta = 0.1 here) or PWCCA's -rho (u^2 + v^2) / 2 (each
    checked once). (The -lambda_k terms of the normalisation by sum w add up to 0 against a
    scale-free statistic's gradient, so no test can see them.)"""
    rng = np.random.default_rng(5)
    z = rng.standard_normal((300, 8)) @ rng.standard_normal((8, 8)) + 3.0
    v, inf = spectral.rankme_influence(z)
    fd, lin = _directional(lambda w: spectral.rankme(z, weights=w), 300, inf, rng)
    assert lin == pytest.approx(fd, rel=1e-5) and abs(inf.sum()) < 1e-8
    fit, inf = spectral.alpha_req_influence(z, ranks=(2, 8))
    fd, lin = _directional(lambda w: spectral.alpha_req(z, ranks=(2, 8), weights=w), 300, inf, rng)
    assert lin == pytest.approx(fd, rel=1e-5)
    views = rng.standard_normal((300, 3, 8)) + rng.standard_normal((300, 1, 8)) * np.arange(1, 9)
    v, inf = spectral.lidar_influence(views, delta=0.1)
    fd, lin = _directional(lambda w: spectral.lidar(views, delta=0.1, weights=w), 300, inf, rng)
    assert lin == pytest.approx(fd, rel=1e-5)
    a = rng.standard_normal((300, 5))
    b = a @ rng.standard_normal((5, 4)) + rng.standard_normal((300, 4))
    cca = spectral.cca_fit(a[:150], b[:150], reg=0.1)
    v, inf = spectral.pwcca_score_influence(cca, a[150:], b[150:])
    fd, lin = _directional(
        lambda w: spectral.pwcca_score_influence(cca, a[150:], b[150:], weights=w)[0], 150, inf, rng)
    assert lin == pytest.approx(fd, rel=1e-5)


def test_linearised_replicates_track_recomputed_ones():
    """Utterance bootstrap of RankMe over 40 'utterances' with their own offsets: each
    replicate recomputed (rows weighted by their utterance's count) vs its linearisation
    value + sum_i c_i IF_i / sum_i c_i. They move together (correlation 0.99), but the
    recomputed ones sit lower (by ~1/4 of their spread here): duplicated utterances make the
    spectrum less even, the downward pull the linearisation leaves out."""
    rng = np.random.default_rng(6)
    groups = np.repeat(np.arange(40), 25)
    z = rng.standard_normal((1000, 6)) * np.arange(1, 7) + rng.standard_normal((40, 6))[groups]
    value, inf = spectral.rankme_influence(z)
    counts = bootstrap.replicate_counts(40, 60, seed=0)[:, groups]        # [B, N]
    exact = np.array([spectral.rankme(z, weights=c) for c in counts])
    linear = value + counts @ inf / counts.sum(axis=1)
    assert np.corrcoef(exact, linear)[0, 1] > 0.97
    assert exact.mean() < linear.mean() and abs(linear.mean() - value) < 0.2 * linear.std()
    point, (lo, hi) = bootstrap.mean_ci(value + inf, groups, num_replicates=200)
    assert point == pytest.approx(value) and lo < value < hi


# ----------------------------------------------------------------------------- records

def test_selection_direction_of_the_rank_based_records():
    """alpha_req is compared by -|alpha - 1| (best layer: the one nearest 1, not the largest);
    cca_logmel's best layer is its lowest; RankMe's and LiDAR's their highest."""
    recs = []
    for layer, (alpha, cca, rank) in enumerate([(2.1, 0.9, 10.0), (1.1, 0.5, 30.0), (0.6, 0.7, 20.0)]):
        recs += results.statistic_records("enc", "alpha_req", [(layer, alpha, (alpha - 0.2, alpha + 0.2), {})])
        recs += results.statistic_records("enc", "cca_logmel", [(layer, cca, (cca - 0.1, cca + 0.1), {})])
        recs += results.statistic_records("enc", "rankme", [(layer, rank, (rank - 1, rank + 1), {})])
    res = results.Results(recs)
    assert [correlation.best_layer(res, "enc", m).layer for m in ("alpha_req", "cca_logmel", "rankme")] == [1, 1, 1]
    a1 = res.get("enc", 1, "alpha_req")
    assert a1.extra["score"] == pytest.approx(-0.1)
    assert a1.extra["score_ci"] == pytest.approx([-0.3, 0.0])           # the CI holds 1
    assert results.compared(res.get("enc", 0, "alpha_req"))[1] == pytest.approx((-1.3, -0.9))
    assert "score" not in res.get("enc", 0, "cca_logmel").extra
    assert correlation.expected_sign("cca_logmel", "phone_mi") == -1
    assert correlation.expected_sign("alpha_req", "ctc_per") == -1
    assert [results.direction(m) for m in ("alpha_req", "cca_logmel", "lidar")] == [
        "best near 1", "lower is better", "higher is better"]
    with pytest.raises(results.ResultsError, match="pass higher_is_better=True"):
        results.register_measure("x_target", "exponent", higher_is_better=False,
                                 kind="label_free", description="", target=1.0)


def test_pipeline_writes_every_rank_based_measure_with_intervals(tmp_path):
    """A small run (log-mel and the zoo's 4-layer APC model at 50 frames/s, 4 utterances per split): one record
    per layer and measure, each value inside its interval, and the report's tables."""
    from speechmi_jax import cli, pipeline
    from speechmi_jax.configs import demo
    names = ["rankme", "alpha_req", "lidar", "cca_logmel"]
    config = cli.load_config(demo.__file__, [
        "encoders=['logmel','melapc-4x256']", "max_utterances_per_split=4", f"measures={names}",
        "progress=False", "spectral.num_bootstrap=100", "spectral.cca_l2=(1e-3, 1e-1)",
        "views.input_context_s=0.0"])   # the log-mel frame itself: an 80-d CCA side
    res = pipeline.run_experiment(config, tmp_path / "run")
    assert res.layers("logmel") == [0] and res.layers("melapc-4x256") == [0, 1, 2, 3, 4]
    for enc in res.encoders():
        for m in names:
            for r in res.series(enc, m):
                assert r.ci[0] <= r.value <= r.ci[1], r
                assert r.extra["n_utterances"] == 4 and r.extra["n_test"] > 200, r
    assert res.get("logmel", 0, "cca_logmel").value > 0.999    # its own input
    assert res.get("melapc-4x256", 3, "lidar").extra["shift_frames"] == 1   # 20 ms at 50 Hz
    assert res.get("logmel", 0, "lidar").extra["shift_frames"] == 2   # 20 ms at 100 Hz
    assert res.get("logmel", 0, "alpha_req").extra["fit_ranks"] == [4, 80]   # log-mel: D = 80
    assert res.get("melapc-4x256", 2, "cca_logmel").extra["l2"] in (1e-3, 1e-1)
    report = (tmp_path / "run" / "report.md").read_text()
    for m, unit in zip(names, ("dims", "exponent", "dims", "correlation")):
        assert f"### `{m}` ({unit})" in report
