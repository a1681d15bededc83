"""InfoNCE bound against closed-form Gaussian MI, through the views it is built from."""

import jax
import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax.estimators import api, known, views

ONE = dict(devices=jax.devices()[:1])
FIT = dict(k=128, learning_rates=(3e-3,), steps=1200, eval_every=100, hidden=64, embed=32, **ONE)


def test_two_pair_gaussian_within_10_percent():
    cov = known.two_pair_cov(5, 5, n_pairs=2, rho=0.8)
    truth = known.gaussian_mi(cov, 5)
    assert truth == pytest.approx(-np.log(1 - 0.64), rel=1e-9)  # 1.022 nats
    a, b = known.sample_gaussian(cov, 5, 20000, seed=0)
    at, bt = known.sample_gaussian(cov, 5, 4096, seed=1)
    est = smi.infonce_mi(a, b, at, bt, **FIT)
    assert truth < np.log(128) - 2
    assert est.nats == pytest.approx(truth, rel=0.10), (est, truth)
    assert est.log2_k == est.ceiling_bits == 7.0
    assert est.ci[0] <= est.bits <= est.ci[1]


def test_shift_view_of_ar1_sequences_within_10_percent():
    # Two independent AR(1) coordinates, phi = 0.9: frames t and t + 2 are Gaussian with
    # correlation phi^2 per coordinate, I = -2 * 1/2 log(1 - phi^4).
    phi, lengths = 0.9, np.full(300, 80)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rng = np.random.default_rng(0)
    x = np.zeros((offsets[-1], 2), np.float32)
    for s, e in zip(offsets[:-1], offsets[1:]):
        x[s] = rng.normal(size=2)
        for t in range(s + 1, e):
            x[t] = phi * x[t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=2)
    rows_a, rows_b, groups = views.shift_pairs(offsets, 2)
    assert (groups == np.searchsorted(offsets, rows_b, side="right") - 1).all()  # no crossing
    split = np.where(groups < 200, "train", np.where(groups < 230, "dev", "test"))
    (est,) = api.infonce_bank(views.gather(x, rows_a)[None], views.gather(x, rows_b)[None],
                              groups, split, **FIT)
    truth = -np.log(1 - phi**4)
    assert est.nats == pytest.approx(truth, rel=0.10), (est, truth)


def test_independent_views_near_zero():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 8000, 3)).astype(np.float32)
    at, bt = rng.normal(size=(2, 2048, 3)).astype(np.float32)
    est = smi.infonce_mi(a, b, at, bt, groups_test=np.arange(2048) // 16, **FIT)
    # The zero-initialised critic is the step-0 candidate (bound exactly 0 up to float32 rounding);
    # dev picks it or a slightly trained critic.
    assert abs(est.bits) < 0.01, est
    assert est.ci[0] <= 1e-6 and est.ci[1] >= -1e-6, est
    assert est.ci[0] <= est.bits <= est.ci[1], est


def test_context_view_shapes_and_values():
    offsets = np.array([0, 5, 9])
    x = np.arange(9 * 2, dtype=np.float32).reshape(9, 2)
    a, b, g = views.context_pairs(x, offsets, window=2, segment=2, mode="mean")
    # utterance 0: t in {2, 3}; utterance 1 (rows 5..8): t in {7}
    assert g.tolist() == [0, 0, 1]
    np.testing.assert_allclose(a[0], x[0:2].mean(0))
    np.testing.assert_allclose(b[2], x[7:9].mean(0))
    a2, _, _ = views.context_pairs(x[None], offsets, window=2, mode="concat")
    assert a2.shape == (1, 5, 4)
    np.testing.assert_allclose(a2[0, 0], x[0:2].reshape(-1))


def test_too_few_pairs_for_k():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 300, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"pairs in split 'dev' has 20 items: expected at least 128 \(one block of K=128"):
        smi.infonce_mi(a[:200], b[:200], a[200:], b[200:], k=128, **ONE)
    with pytest.raises(ValueError, match=r"b has shape \(3, 300, 3\): expected 2 or 1 layers"):
        api.infonce_bank(np.stack([a, a]), np.stack([b, b, b]), np.arange(300), np.zeros(300, int))


def test_layers_vs_shared_input_features():
    # b [1, N, Db] (e.g. the input features) is paired with every layer of a [L, N, Da].
    rng = np.random.default_rng(0)
    b = rng.normal(size=(1, 6000, 2)).astype(np.float32)
    a = np.stack([b[0] + 0.5 * rng.normal(size=(6000, 2)), rng.normal(size=(6000, 2))]).astype(np.float32)
    groups = np.arange(6000) // 20
    split = np.where(groups < 200, "train", np.where(groups < 250, "dev", "test"))
    fit = {**FIT, "steps": 400}
    informative, noise = api.infonce_bank(a, b, groups, split, **fit)
    truth = -np.log(1 - 1 / 1.25)  # per-coordinate corr^2 = 1 / (1 + 0.25), two coordinates
    assert informative.nats == pytest.approx(truth, rel=0.15)
    assert abs(noise.bits) < 0.02
