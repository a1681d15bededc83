"""Probe bound against a Monte-Carlo truth (class-conditional Gaussians: softmax-linear posterior)."""

import jax
import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax import units
from speechmi_jax.estimators import bootstrap, known, probe

ONE = dict(devices=jax.devices()[:1])
# Full-batch Adam compiles in a few seconds (L-BFGS's line search takes ~15 s on 2 cores), so the
# tests that do not need L-BFGS's precision use it.
ADAM = dict(optimizer="adam", learning_rates=(0.05,), steps=200, eval_every=10, **ONE)


@pytest.fixture(scope="module")
def task():
    priors, means = known.class_gaussians(num_classes=4, dim=5, separation=0.8, seed=0)
    return priors, means, units.nats_to_bits(known.class_gaussians_mi(priors, means))


def test_large_n_matches_truth(task):
    priors, means, truth = task
    zt, yt = known.sample_classes(priors, means, 20000, seed=1)
    zs, ys = known.sample_classes(priors, means, 20000, seed=2)
    est = smi.probe_mi(zt, yt, zs, ys, **ONE)
    assert abs(est.bits - truth) < 0.03, (est, truth)
    assert est.ci[0] <= est.bits <= est.ci[1]
    assert est.h_y_bits == est.ceiling_bits
    # H(Y) is the Miller-Madow entropy of the test labels, exactly.
    p = np.bincount(ys, minlength=4) / ys.size
    h = -(p * np.log(p)).sum() + 3 / (2 * ys.size)
    assert est.h_y_bits == pytest.approx(units.nats_to_bits(h), abs=1e-9)
    assert 0.25 < est.accuracy < 1.0
    # Accuracy's interval: the group bootstrap of a mean of 0/1 items over 20000 singleton
    # groups has half-width ~ 1.96 * sqrt(a (1 - a) / N).
    lo, hi = est.accuracy_ci
    half = 1.96 * np.sqrt(est.accuracy * (1 - est.accuracy) / ys.size)
    assert lo < est.accuracy < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.2)


def test_small_n_not_above_truth(task):
    priors, means, truth = task
    zt, yt = known.sample_classes(priors, means, 300, seed=3)
    zs, ys = known.sample_classes(priors, means, 300, seed=4)
    groups = np.arange(300) // 10  # 30 "utterances" of 10 frames
    est = smi.probe_mi(zt, yt, zs, ys, groups_train=groups, groups_test=groups, **ADAM)
    assert est.ci[0] <= truth, (est, truth)
    assert est.bits < truth + 0.05


def test_independent_near_zero_ci_covers_zero():
    # The interval resamples test utterances; the training side's error (the fitted prior's KL,
    # ~(C - 1) / 2 N_train nats) is not in it, so the training split is made large.
    rng = np.random.default_rng(0)
    zt, yt = rng.normal(size=(20000, 6)).astype(np.float32), rng.integers(0, 3, 20000)
    zs, ys = rng.normal(size=(4000, 6)).astype(np.float32), rng.integers(0, 3, 4000)
    est = smi.probe_mi(zt, yt, zs, ys, groups_test=np.arange(4000) // 20, **ADAM)
    assert abs(est.bits) < 0.02, est
    assert est.ci[0] <= 0.0 <= est.ci[1], est


def test_unlabelled_frames_are_ignored(task):
    priors, means, _ = task
    zt, yt = known.sample_classes(priors, means, 3000, seed=5)
    zs, ys = known.sample_classes(priors, means, 3000, seed=6)
    dev = dict(z_dev=zt[:500], y_dev=yt[:500])
    base = smi.probe_mi(zt[500:], yt[500:], zs, ys, **dev, **ADAM)
    # Extra frames labelled -1 (with wild features) must change nothing.
    junk = np.full((700, 5), 50.0, np.float32)
    zt2, yt2 = np.concatenate([zt[500:], junk]), np.concatenate([yt[500:], np.full(700, -1)])
    zs2, ys2 = np.concatenate([junk, zs]), np.concatenate([np.full(700, -1), ys])
    est = smi.probe_mi(zt2, yt2, zs2, ys2, **dev, **ADAM)
    assert est.bits == pytest.approx(base.bits, abs=2e-4)
    assert est.n_test == base.n_test == 3000


def test_mlp_probe_and_adam(task):
    priors, means, truth = task
    zt, yt = known.sample_classes(priors, means, 6000, seed=7)
    zs, ys = known.sample_classes(priors, means, 6000, seed=8)
    mlp = smi.probe_mi(zt, yt, zs, ys, probe="mlp", hidden=32, **ADAM)
    adam = smi.probe_mi(zt, yt, zs, ys, optimizer="adam", learning_rates=(1e-2, 1e-1), steps=300,
                        batch_size=1000, **ONE)
    for est in (mlp, adam):
        assert abs(est.bits - truth) < 0.06, (est, truth)
    assert adam.lr in (1e-2, 1e-1) and 0 < adam.step <= 300


def test_bootstrap_ci_matches_closed_form_for_iid_groups():
    # With one item per group the bootstrap sd of a mean is sd / sqrt(n).
    rng = np.random.default_rng(0)
    x = rng.normal(size=4000)
    point, (lo, hi) = bootstrap.mean_ci(x, np.arange(4000), level=0.95, num_replicates=4000)
    assert point == pytest.approx(x.mean()) and lo < point < hi
    half = 1.96 * x.std() / np.sqrt(4000)
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.08)
    # Clustered items: resampling groups widens the interval by ~sqrt(cluster size).
    xc = np.repeat(rng.normal(size=400), 10)
    _, (lo_c, hi_c) = bootstrap.mean_ci(xc, np.arange(4000) // 10, num_replicates=2000)
    _, (lo_f, hi_f) = bootstrap.mean_ci(xc, np.arange(4000), num_replicates=2000)
    assert (hi_c - lo_c) / (hi_f - lo_f) == pytest.approx(np.sqrt(10), rel=0.2)


def _exact_posterior_ce(priors, means, y, rng):
    """Per-frame -log p(y | z) under the true model for z ~ N(means[y], I): the best probe's CE."""
    z = means[y] + rng.normal(size=(y.size, means.shape[1]))
    logits = z @ means.T - 0.5 * (means**2).sum(1) + np.log(priors)
    return np.logaddexp.reduce(logits, axis=1) - logits[np.arange(y.size), y]


@pytest.mark.parametrize("design", ["balanced_speakers", "frame_labels"])
def test_bound_ci_covers_the_truth(design):
    # 200 test sets of 60 utterances x 20 frames, scored with the exact posterior (CE = H(Y|Z) in
    # expectation), so the bound's point estimate centres on the true MI and a 95 % interval
    # should cover it about 95 % of the time (a percentile bootstrap over 60 groups runs a little
    # under). balanced_speakers: one label per utterance, 10 utterances per label, near-perfect
    # separation (MI close to H(Y) = log 6), resampled within labels. Re-estimating H(Y) on each
    # replicate put the interval below its own estimate in 11 % of these sets and covered the
    # truth 73 % of the time.
    num_classes, utts, per = 6, 60, 20
    separation = 3.0 if design == "balanced_speakers" else 0.8
    priors, means = known.class_gaussians(num_classes=num_classes, dim=4, separation=separation, seed=0)
    if design == "balanced_speakers":
        priors = np.full(num_classes, 1.0 / num_classes)
    truth = known.class_gaussians_mi(priors, means)
    rng = np.random.default_rng(0)
    groups = np.arange(utts * per) // per
    covered = 0
    for r in range(200):
        if design == "balanced_speakers":
            y = np.repeat(np.arange(num_classes), utts // num_classes * per)
        else:
            y = rng.choice(num_classes, p=priors, size=utts * per)
        ce = _exact_posterior_ce(priors, means, y, rng)
        point, (lo, hi) = bootstrap.probe_bound_ci(ce, y, groups, probe.label_entropy(y, num_classes),
                                                   stratify=design == "balanced_speakers", seed=r)
        assert lo <= point <= hi
        assert point == pytest.approx(probe.label_entropy(y, num_classes) - ce.mean(), abs=1e-12)
        covered += lo <= truth <= hi
    assert 0.85 <= covered / 200 <= 0.99, covered
    if design == "balanced_speakers":
        # Unstratified, the spread of CE across speakers counts as sampling error: still centred
        # on the estimate, but wider.
        _, (lo_u, hi_u) = bootstrap.probe_bound_ci(ce, y, groups, probe.label_entropy(y, num_classes), seed=0)
        assert lo_u <= point <= hi_u and hi_u - lo_u > 1.3 * (hi - lo)
    else:
        with pytest.raises(ValueError, match="constant within each group"):
            bootstrap.probe_bound_ci(ce, y, groups, 1.0, stratify=True)


def test_stratified_counts_keep_each_stratum():
    strata = np.array([0, 0, 0, 1, 1, 2])
    counts = bootstrap.replicate_counts(6, 500, seed=0, strata=strata)
    np.testing.assert_array_equal(counts[:, :3].sum(1), 3)
    np.testing.assert_array_equal(counts[:, 3:5].sum(1), 2)
    np.testing.assert_array_equal(counts[:, 5], 1)
    assert counts[:, :3].std() > 0.5  # resampled within the stratum
    with pytest.raises(ValueError, match="strata .labels. must be constant within each group"):
        bootstrap.mean_ci(np.ones(4), np.array([0, 0, 1, 1]), strata=np.array([0, 1, 1, 1]))


def test_entropy_estimators():
    y = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    assert probe.label_entropy(y, 5, "plugin") == pytest.approx(np.log(4))
    assert probe.label_entropy(y, 5, "miller_madow") == pytest.approx(np.log(4) + 3 / 16)


@pytest.mark.parametrize(
    "change, match",
    [
        (lambda zt, yt, zs, ys: (zt.at_nan(), yt, zs, ys), r"z \(1, 1000, 5\) holds a non-finite value at layer 0, item 7"),
        (lambda zt, yt, zs, ys: (zt, yt, zs, np.where(np.arange(500) == 3, 9, ys)), r"y .* holds label 9"),
        (lambda zt, yt, zs, ys: (zt, yt[:400], zs, ys), r"y_train has shape \(400,\): expected \(500,\)"),
        (lambda zt, yt, zs, ys: (zt, np.where(yt == 2, 1, yt), zs, ys), r"classes \[2\] occur in .* absent from the training"),
        (lambda zt, yt, zs, ys: (zt, yt.astype(float), zs, ys), r"expected integer class ids"),
    ],
)
def test_input_errors(change, match):
    rng = np.random.default_rng(0)
    zt, zs = rng.normal(size=(2, 500, 5)).astype(np.float32)
    yt, ys = rng.integers(0, 3, (2, 500))

    class Z(np.ndarray):
        def at_nan(self):
            out = np.array(self)
            out[7, 2] = np.nan
            return out

    args = change(zt.view(Z), yt, zs, ys)
    with pytest.raises(ValueError, match=match):
        smi.probe_mi(*[np.asarray(a) for a in args], num_classes=3, **ONE)


def test_standardisation_statistics_match_numpy_in_row_blocks():
    """api.standardize_splits' statistics, taken in blocks of rows, are np.mean / np.std's in
    float64 (to float32 bits), also where float32 squares overflow and where a block ends
    mid-array; a split is standardised with the first split's statistics."""
    from speechmi_jax.estimators import api
    rng = np.random.default_rng(0)
    train = (rng.normal(size=(2, 1001, 7)) * np.array([3.0, 1e25])[:, None, None] + 5).astype(np.float32)
    other = (rng.normal(size=(2, 50, 7)) * 2).astype(np.float32)
    for layer in train:
        mean, std = api._moments(layer, chunk_elems=70)  # 10 rows a block, the last one short
        assert np.array_equal(mean.astype(np.float32), layer.mean(0, dtype=np.float64).astype(np.float32))
        assert np.array_equal(std.astype(np.float32), layer.std(0, dtype=np.float64).astype(np.float32))
    t, o = api.standardize_splits(train, other)
    np.testing.assert_allclose(t.mean(1), 0.0, atol=1e-5)
    np.testing.assert_allclose(t.std(1), 1.0, rtol=1e-5)
    ref = (other - train.mean(1, keepdims=True, dtype=np.float64)) / train.std(1, keepdims=True, dtype=np.float64)
    np.testing.assert_allclose(o, ref, rtol=1e-5, atol=1e-6)
