"""The known-MI task set (closed-form truths) and the generic estimator `smi.estimate_mi` on it."""

import jax
import numpy as np
import pytest
from scipy import stats

import speechmi_jax as smi
from speechmi_jax.estimators import generic, tasks


def test_truths_in_closed_form():
    by = {t.name: t for t in tasks.beyond_normal_tasks()}
    assert len(by) == 8
    assert by["normal-1x1"].mi_nats == pytest.approx(-0.5 * np.log(1 - 0.75**2))
    assert by["dense-5x5"].mi_nats == pytest.approx(0.5 * np.log(36 / 11))  # det ratio of 0.5 + 0.5 I
    assert by["dense-25x25"].mi_nats == pytest.approx(0.5 * np.log(26**2 / 51))
    for name in ("sparse-2pair-5x5", "half-cube-5x5", "spiral-5x5"):
        assert by[name].mi_nats == pytest.approx(-np.log(1 - 0.64))
    assert tasks.student_t_mi(1e6, 2, 2) == pytest.approx(0.0, abs=1e-5)  # -> Gaussian, independent


def test_student_t_truth_against_monte_carlo():
    # E[log p(x, y) - log p(x) - log p(y)] under the task's own sampler, densities from scipy.
    nu, dx, dy = 3, 2, 3
    x, y = tasks.sample_student_t(nu, dx, dy, 200_000, seed=0)
    x, y = x.astype(np.float64), y.astype(np.float64)
    t = lambda d: stats.multivariate_t(np.zeros(d), np.eye(d), df=nu)
    v = t(dx + dy).logpdf(np.hstack([x, y])) - t(dx).logpdf(x) - t(dy).logpdf(y)
    assert tasks.student_t_mi(nu, dx, dy) == pytest.approx(v.mean(), abs=4 * v.std() / np.sqrt(v.size))


def test_spiral_is_invertible_and_keeps_the_norm():
    x = np.random.default_rng(0).normal(size=(100, 5))
    s = tasks.spiral(x)
    np.testing.assert_allclose(np.linalg.norm(s, axis=1), np.linalg.norm(x, axis=1), rtol=1e-12)
    np.testing.assert_allclose(tasks.spiral(s, speed=-1 / 3), x, atol=1e-10)


def test_estimate_mi_within_tolerance_on_known_tasks():
    # Three known tasks and an independent pair, one bank (one compile). The estimate is a held-out
    # lower bound: it may not exceed the truth by more than the held-out sampling error (5000
    # scored pairs: about 0.02 nats standard error at these MIs; margin 0.05), and may fall short
    # by at most 0.10 nats (measured: sparse -0.01, Student-t 5x5 -0.06, asinh Student-t -0.01).
    # The independent pair must read ~0 (within 0.03 nats) from a *trained* critic (step > 0; its
    # Gaussian part is the constant critic, every canonical correlation being below the null
    # edge); the dependent tasks in the same bank show that training works.
    names = ("sparse-2pair-5x5", "student-5x5-nu3", "asinh-student-1x1-nu1")
    picked = [tasks.task_by_name(n) for n in names]
    pairs = [t.sample(5000, seed=11) for t in picked]
    rng = np.random.default_rng(3)
    pairs.append((rng.normal(size=(5000, 5)).astype(np.float32), rng.normal(size=(5000, 5)).astype(np.float32)))
    truths = [t.mi_nats for t in picked] + [0.0]
    ests = generic.estimate_mi_bank([x[:2500] for x, _ in pairs], [y[:2500] for _, y in pairs],
                                    [x[2500:] for x, _ in pairs], [y[2500:] for _, y in pairs])
    for name, est, truth in zip(names + ("independent",), ests, truths):
        assert truth - 0.10 <= est.nats <= truth + 0.05, (name, est.nats, truth)
        assert est.ci[0] <= est.bits <= est.ci[1], (name, est)
        assert est.n_test == 5000 and est.ceiling_bits == pytest.approx(np.log2(2500))
    assert abs(ests[-1].nats) <= 0.03, ests[-1]
    assert all(e.step > 0 for e in ests)  # every figure comes from a trained critic


def test_estimate_mi_public_api_and_bad_input():
    x, y = tasks.task_by_name("normal-1x1").sample(1200, seed=0)
    est = smi.estimate_mi(x[:600], y[:600], x[600:], y[600:], steps=100, devices=jax.devices()[:1])
    assert 0.413 - 0.15 <= est.nats <= 0.413 + 0.08, est
    with pytest.raises(ValueError, match=r"x_train\[0\] has shape \(600,\): expected 2 dims \[N, Dx\]"):
        smi.estimate_mi(x[:600, 0], y[:600], x[600:], y[600:])
    with pytest.raises(ValueError, match=r"task 0: train dims \(1, 1\) != test dims \(2, 1\)"):
        smi.estimate_mi(x[:600], y[:600], np.hstack([x, x])[600:], y[600:])
    bad = x[:600].copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"x_train\[0\] \(600, 1\) holds a non-finite value at item 7"):
        smi.estimate_mi(bad, y[:600], x[600:], y[600:])
