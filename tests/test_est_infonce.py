"""InfoNCE bound against closed-form Gaussian MI, through the views it is built from.

Tolerances are two-sided. A held-out InfoNCE figure is a lower bound in expectation, so it may
exceed the truth only by its sampling error (about 0.02 nats at 4096 held-out pairs; margin
0.05 nats, which a critic that saw its test pairs in training would overshoot), and may fall short
by the stated tolerance (the log K gap plus what the small critic misses).
"""

import jax
import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax.estimators import api, generic, known, views

ONE = dict(devices=jax.devices()[:1])
FIT = dict(k=128, learning_rates=(3e-3,), steps=600, eval_every=100, hidden=64, embed=32, **ONE)
OVER = 0.05  # nats a held-out bound may exceed the truth by (sampling error)

TWO_PAIR = known.two_pair_cov(5, 5, n_pairs=2, rho=0.8)


@pytest.fixture(scope="module")
def two_pair():
    truth = known.gaussian_mi(TWO_PAIR, 5)
    assert truth == pytest.approx(-np.log(1 - 0.64), rel=1e-9)  # 1.022 nats
    a, b = known.sample_gaussian(TWO_PAIR, 5, 12000, seed=0)
    at, bt = known.sample_gaussian(TWO_PAIR, 5, 4096, seed=1)
    return truth, (a, b, at, bt)


@pytest.mark.parametrize("critic, short", [("separable", 0.12), ("concat", 0.15)])
def test_two_pair_gaussian_both_sides(two_pair, critic, short):
    truth, data = two_pair
    est = smi.infonce_mi(*data, **{**FIT, "critic": critic})
    assert truth - short <= est.nats <= truth + OVER, (critic, est, truth)
    assert est.step > 0 and est.measure == f"infonce_{critic}"
    assert est.log2_k == est.ceiling_bits == 7.0
    assert est.ci[0] <= est.bits <= est.ci[1]


def test_bilinear_critic_misses_the_quadratic_terms(two_pair):
    # x^T W y cannot express the quadratic term in y of the Gaussian log density ratio: the design
    # measurement is 0.64 of 1.022 nats. It is still a held-out lower bound (upper side), and a
    # trained bilinear critic reaches at least half the truth (lower side: 0 if training broke).
    truth, data = two_pair
    est = smi.infonce_mi(*data, **{**FIT, "critic": "bilinear"})
    assert 0.5 * truth <= est.nats <= 0.85 * truth, (est, truth)
    assert est.step > 0


def test_shift_view_of_ar1_sequences_both_sides():
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
    assert truth - 0.12 <= est.nats <= truth + OVER, (est, truth)


def test_independent_layer_reads_zero_next_to_informative_one():
    # b [1, N, Db] (e.g. the input features) is paired with every layer of a [L, N, Da]; layer 1 is
    # independent of b. The independent layer's figure must come from a trained critic (step > 0:
    # the constant initial critic, bound exactly 0, is no candidate) and read ~0 on held-out pairs;
    # the informative layer, trained in the same bank, shows that training works (two-sided).
    rng = np.random.default_rng(0)
    b = rng.normal(size=(1, 6000, 2)).astype(np.float32)
    a = np.stack([b[0] + 0.5 * rng.normal(size=(6000, 2)), rng.normal(size=(6000, 2))]).astype(np.float32)
    groups = np.arange(6000) // 20
    split = np.where(groups < 200, "train", np.where(groups < 250, "dev", "test"))
    informative, noise = api.infonce_bank(a, b, groups, split, **{**FIT, "steps": 400})
    truth = -np.log(1 - 1 / 1.25)  # per-coordinate corr^2 = 1 / (1 + 0.25), two coordinates
    assert truth - 0.15 <= informative.nats <= truth + OVER, informative
    assert noise.step > 0 and informative.step > 0
    assert -0.05 <= noise.nats <= 0.02, noise
    assert noise.ci[0] <= noise.bits <= noise.ci[1]


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


def test_same_utterance_negatives_rank_content_above_utterance_identity(tmp_path):
    # Layer A holds the content (AR(1), phi = 0.9, 2 dims) and a faint, noisy utterance vector; layer B
    # a faint, noisy copy of the content and the utterance vector itself. Frames t and t + 2
    # share the utterance vector exactly, so with negatives from *other* utterances B's pairs
    # are told apart by utterance identity and B climbs towards the log K ceiling: that measure ranks
    # B above A (it fails the sensitivity check, asserted below). With negatives from the same
    # utterance the utterance vector no longer helps and A ranks above B, as it must.
    phi, n_utt, t_len = 0.9, 150, 64
    rng = np.random.default_rng(0)
    content = np.zeros((n_utt, t_len, 2))
    content[:, 0] = rng.normal(size=(n_utt, 2))
    for t in range(1, t_len):
        content[:, t] = phi * content[:, t - 1] + np.sqrt(1 - phi**2) * rng.normal(size=(n_utt, 2))
    utt = np.repeat(rng.normal(size=(n_utt, 1, 2)), t_len, axis=1)
    layer_a = np.concatenate([content, 0.3 * utt + rng.normal(size=utt.shape)], -1).reshape(-1, 4)
    layer_b = np.concatenate([0.3 * content + rng.normal(size=content.shape), utt], -1).reshape(-1, 4)
    x = np.stack([layer_a, layer_b]).astype(np.float32)  # [L=2, frames, 4]
    offsets = np.arange(n_utt + 1) * t_len
    rows_a, rows_b, groups = views.shift_pairs(offsets, 2)
    split = np.where(groups < 110, "train", np.where(groups < 125, "dev", "test"))
    a, b = x[:, rows_a], x[:, rows_b]

    # one layer at a time (two chunks), each checkpointed in its own folder
    same_a, same_b = generic.infonce_same_utterance_bank(a, b, groups, split, k=16, steps=400,
                                                         layer_chunk=1, checkpoint_dir=tmp_path, **ONE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["layers_000_001", "layers_001_002"]
    assert same_a.step > 0 and same_b.step > 0 and (same_a.layer, same_b.layer) == (0, 1)
    assert same_a.nats >= 0.5 and same_b.nats <= 0.25 and same_a.nats > same_b.nats + 0.3, (same_a, same_b)
    assert same_a.nats <= -np.log(1 - phi**4) + OVER  # A's pairs carry the content's MI at most
    assert same_a.log2_k == 4.0

    cross_a, cross_b = api.infonce_bank(a, b, groups, split, **{**FIT, "k": 16, "steps": 400})
    assert cross_b.nats > cross_a.nats, (cross_a, cross_b)  # cross-utterance negatives fail here
    assert cross_b.nats >= same_b.nats + 1.0  # B's figure there is utterance identity, not content
