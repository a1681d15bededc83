"""Building blocks of the SSL objectives: k-means, span masking, Gumbel quantizers, synthetic sources.

Tolerances are stated per test; every expectation comes from a closed form, a brute-force
computation or transformers' PyTorch module.
"""

from __future__ import annotations

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import special

from speechmi_jax.estimators.kmeans import kmeans_assign, kmeans_fit, plugin_entropy_bits
from speechmi_jax.ssl import synthetic
from speechmi_jax.ssl.masking import span_mask
from speechmi_jax.ssl.quantizer import GumbelProductQuantizer, GumbelVQ, code_perplexity


# ----------------------------------------------------------------------------- k-means

def _blobs(n_per=500, seed=0):
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0], [3.0, 12.0]])
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(centres)), n_per)
    rng.shuffle(labels)
    return centres[labels] + 0.5 * rng.standard_normal((len(labels), 2)), labels, centres


def test_kmeans_recovers_known_clusters():
    x, labels, centres = _blobs()
    # chunk 128 does not divide N = 2500: the padded last chunk must not move any centre.
    c, info = kmeans_fit(x, 5, seed=1, chunk=128, return_info=True)
    c = np.asarray(c)
    match = np.argmin(((centres[:, None] - c[None]) ** 2).sum(-1), axis=1)
    assert sorted(match.tolist()) == list(range(5)), "two true centres share one fitted centre"
    # each fitted centre is the mean of ~500 points with std 0.5: error ~0.03 per coordinate
    assert np.abs(c[match] - centres).max() < 0.1
    ids = np.asarray(kmeans_assign(x, c, chunk=128))
    assert ids.dtype == np.int32
    assert (ids == match[labels]).mean() > 0.999
    # a fixed point of Lloyd: every centre is the mean of its points
    for j in range(5):
        np.testing.assert_allclose(c[j], x[ids == j].mean(0), atol=1e-4)
    assert 2 <= info["iterations"] <= 100
    assert info["inertia"] == pytest.approx(((x - c[ids]) ** 2).sum(), rel=1e-3)


def test_kmeans_assign_matches_brute_force():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1000, 7)).astype(np.float32)
    c = rng.standard_normal((13, 7)).astype(np.float32)
    want = np.argmin(((x[:, None] - c[None]) ** 2).sum(-1), axis=1)
    for chunk in (1000, 97):
        np.testing.assert_array_equal(np.asarray(kmeans_assign(x, c, chunk=chunk)), want)
    # utterance-sized calls of 40 different lengths share one compiled (padded) shape
    from speechmi_jax.estimators import kmeans
    before = kmeans._assign._cache_size()
    for n in range(300, 340):
        np.testing.assert_array_equal(np.asarray(kmeans_assign(x[:n], c)), want[:n])
    assert kmeans._assign._cache_size() - before <= 1


def test_kmeans_plusplus_beats_a_bad_start_and_is_seeded():
    # 40 tight clusters on a line: Lloyd alone from random points merges clusters; k-means++
    # seeding finds (nearly) all of them. Inertia of the truth: 40 * 50 * 2 * 0.01 = 40.
    rng = np.random.default_rng(3)
    centres = np.stack([np.arange(40) * 5.0, np.zeros(40)], 1)
    x = np.repeat(centres, 50, axis=0) + 0.1 * rng.standard_normal((2000, 2))
    c1, info = kmeans_fit(x, 40, seed=0, return_info=True)
    c2 = kmeans_fit(x, 40, seed=0)
    np.testing.assert_array_equal(np.asarray(c1), np.asarray(c2))
    assert info["inertia"] < 40 * 3  # a merged pair alone adds 50 * 2 * 2.5^2 = 625


def test_kmeans_relocates_an_empty_cluster():
    # Start from 4 of the 5 true centres plus one far from every point: that centre gets no
    # points, so it must move to a worst-served point (in the blob with no centre) to recover it.
    x, _, centres = _blobs(seed=2)
    init = np.vstack([centres[:4], [[100.0, 100.0]]])
    c = np.asarray(kmeans_fit(x, 5, init=init, chunk=128))
    match = np.argmin(((centres[:, None] - c[None]) ** 2).sum(-1), axis=1)
    assert sorted(match.tolist()) == list(range(5))
    assert np.abs(c[match] - centres).max() < 0.1
    assert np.bincount(np.asarray(kmeans_assign(x, c)), minlength=5).min() > 400


def test_kmeans_errors():
    with pytest.raises(ValueError, match=r"k=5: expected 1 <= k <= N = 3"):
        kmeans_fit(np.zeros((3, 2)), 5)
    with pytest.raises(ValueError, match=r"expected points \[N, D\]"):
        kmeans_fit(np.zeros(10), 2)
    with pytest.raises(ValueError, match=r"init: expected centres \[k=2, D=2\], got \(3, 2\)"):
        kmeans_fit(np.zeros((4, 2)), 2, init=np.zeros((3, 2)))
    with pytest.raises(ValueError, match=r"centroids: expected \[k, 2\]"):
        kmeans_assign(np.zeros((4, 2)), np.zeros((3, 5)))


def test_plugin_entropy_bits():
    assert plugin_entropy_bits(np.array([0, 1, 2, 3] * 25), 8) == pytest.approx(2.0)
    assert plugin_entropy_bits(np.zeros(10, np.int32), 4) == pytest.approx(0.0)
    ids = np.array([0] * 3 + [1])
    assert plugin_entropy_bits(ids, 2) == pytest.approx(-(0.75 * math.log2(0.75) + 0.25 * math.log2(0.25)))
    with pytest.raises(ValueError, match=r"values must lie in \[0, 2\)"):
        plugin_entropy_bits(np.array([0, 2]), 2)


def test_kmeans_matches_scikit_learn():
    cluster = pytest.importorskip("sklearn.cluster", reason="scikit-learn not installed (optional check)")
    x, _, _ = _blobs(seed=4)
    ours = np.asarray(kmeans_fit(x, 5, seed=0))
    ref = cluster.KMeans(5, n_init=1, random_state=0).fit(x).cluster_centers_
    match = np.argmin(((ref[:, None] - ours[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_allclose(ours[match], ref, atol=1e-3)


# ----------------------------------------------------------------------------- span masking

def _expected_fraction(length, mask_prob, span):
    """Exact E[masked frames] / L for the rule in masking.py (stochastic rounding of n)."""
    m = length - span + 1
    if m <= 0:
        return 0.0
    c = mask_prob * length / span
    lo = math.floor(c)
    total = 0.0
    for n, pn in ((lo, 1 - (c - lo)), (lo + 1, c - lo)):
        n = min(max(n, 1), m)
        for t in range(length):
            w = min(t, m - 1) - max(0, t - span + 1) + 1  # starts whose span covers frame t
            total += pn * (1 - special.comb(m - w, n, exact=True) / special.comb(m, n, exact=True))
    return total / length


def test_span_mask_fraction_matches_exact_expectation_and_skips_padding():
    b, t, span = 3000, 40, 5
    lengths = np.array([40, 33, 12, 5, 4] * (b // 5))
    mask = np.arange(t)[None] < lengths[:, None]
    fn = jax.jit(span_mask, static_argnames="span")
    for mask_prob in (0.08, 0.65):
        out = np.asarray(fn(jax.random.PRNGKey(0), jnp.asarray(mask), mask_prob, span=span))
        assert not (out & ~mask).any(), "a padded frame was masked"
        for length in (40, 33, 12, 5, 4):
            rows = out[lengths == length]
            frac = rows[:, :length].mean()
            want = _expected_fraction(length, mask_prob, span)
            # 600 rows: standard error of the fraction < 0.01; 0.02 = several standard errors
            assert frac == pytest.approx(want, abs=0.02), (mask_prob, length)
            if length >= span:
                assert rows.any(axis=1).all(), "an utterance with >= span frames got no span"
                # runs of masked frames are at least one span long
                for r in rows[:50, :length]:
                    runs = [len(list(g)) for v, g in itertools.groupby(r) if v]
                    assert min(runs) >= span
            else:
                assert not rows.any()
    # mask_prob 0.65, span 5, L 40: wav2vec 2.0's regime, overlaps keep the fraction well below 0.65
    assert _expected_fraction(40, 0.65, 5) < 0.55


def test_span_mask_vmaps_over_mask_prob():
    mask = jnp.ones((64, 30), bool)
    probs = jnp.array([0.1, 0.5, 0.9])
    out = jax.vmap(lambda p: span_mask(jax.random.PRNGKey(1), mask, p, 3))(probs)
    fracs = np.asarray(out.mean(axis=(1, 2)))
    assert out.shape == (3, 64, 30) and fracs[0] < fracs[1] < fracs[2]


# ----------------------------------------------------------------------------- quantizers

def _product_quantizer_and_params(g=2, v=5, dim=8, c=6, seed=0):
    q = GumbelProductQuantizer(num_groups=g, num_vars=v, codevector_dim=dim)
    x = jax.random.normal(jax.random.PRNGKey(seed), (3, 11, c))
    params = q.init(jax.random.PRNGKey(seed + 1), x)["params"]
    return q, params, x


def test_product_quantizer_eval_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers import Wav2Vec2Config
    from transformers.models.wav2vec2.modeling_wav2vec2 import Wav2Vec2GumbelVectorQuantizer

    q, params, x = _product_quantizer_and_params()
    config = Wav2Vec2Config(conv_dim=(6,), conv_kernel=(10,), conv_stride=(5,), num_codevector_groups=2,
                            num_codevectors_per_group=5, codevector_dim=8)
    ref = Wav2Vec2GumbelVectorQuantizer(config).eval()
    with torch.no_grad():
        ref.weight_proj.weight.copy_(torch.from_numpy(np.asarray(params["weight_proj"]["kernel"]).T.copy()))
        ref.weight_proj.bias.copy_(torch.from_numpy(np.array(params["weight_proj"]["bias"])))
        ref.codevectors.copy_(torch.from_numpy(np.array(params["codevectors"])))
    mask = np.random.default_rng(0).random((3, 11)) < 0.5
    for m in (None, mask):
        quantized, ppl, div = q.apply({"params": params}, x, train=False,
                                      mask=None if m is None else jnp.asarray(m))
        with torch.no_grad():
            rq, rppl = ref(torch.from_numpy(np.array(x)),
                           mask_time_indices=None if m is None else torch.from_numpy(m))
        np.testing.assert_allclose(np.asarray(quantized), rq.numpy(), atol=1e-6)
        assert float(ppl) == pytest.approx(float(rppl), rel=1e-5)
        assert float(div) == pytest.approx((10 - float(rppl)) / 10, rel=1e-5)
        assert 2.0 <= float(ppl) <= 10.0


def test_product_quantizer_train_is_straight_through_gumbel():
    q, params, x = _product_quantizer_and_params()
    rngs = {"gumbel": jax.random.PRNGKey(7)}

    @jax.jit
    def run(params, temperature):
        return q.apply({"params": params}, x, temperature=temperature, train=True, rngs=rngs)

    quantized, ppl, div = run(params, 2.0)
    # forward values are exact codevectors: each group's slice is one row of its codebook
    cv = np.asarray(params["codevectors"][0]).reshape(2, 5, 4)
    qz = np.asarray(quantized).reshape(3, 11, 2, 4)
    for g in range(2):
        d = np.abs(qz[:, :, g, None, :] - cv[g][None, None]).max(-1)  # [3, 11, 5]
        assert (d.min(-1) < 1e-6).all()
    # training perplexity is that of the noise-free softmax of the logits (transformers' rule)
    logits = (x @ params["weight_proj"]["kernel"] + params["weight_proj"]["bias"]).reshape(33, 2, 5)
    assert float(ppl) == pytest.approx(float(code_perplexity(jax.nn.softmax(logits, -1))), rel=1e-5)
    assert float(div) == pytest.approx((10 - float(ppl)) / 10, rel=1e-6)
    # gradients reach the projection through the straight-through estimator, and depend on tau
    loss = lambda p, tau: jnp.sum(run(p, tau)[0] * jnp.arange(8.0))
    grad = jax.jit(jax.grad(loss))
    g_hot, g_cold = grad(params, 2.0), grad(params, 0.5)
    kh, kc = np.asarray(g_hot["weight_proj"]["kernel"]), np.asarray(g_cold["weight_proj"]["kernel"])
    assert np.isfinite(kh).all() and np.abs(kh).max() > 1e-4
    assert np.abs(kh - kc).max() > 1e-4


def test_product_quantizer_collapse_gives_maximal_diversity_loss():
    q, params, x = _product_quantizer_and_params()
    collapsed = jax.tree.map(lambda p: p, params)
    collapsed["weight_proj"] = {"kernel": jnp.zeros_like(params["weight_proj"]["kernel"]),
                                "bias": jnp.tile(jnp.array([50.0, 0, 0, 0, 0]), 2)}
    _, ppl, div = q.apply({"params": collapsed}, x, train=False)
    assert float(ppl) == pytest.approx(2.0) and float(div) == pytest.approx(0.8)


def test_gumbel_vq_ids_and_perplexity():
    vq = GumbelVQ(num_vars=16, codevector_dim=4)
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 50, 3))
    params = vq.init(jax.random.PRNGKey(1), x)["params"]
    assert params["codevectors"].shape == (1, 16, 4) and params["weight_proj"]["kernel"].shape == (3, 16)
    for train in (False, True):
        quantized, ids, ppl = vq.apply({"params": params}, x, temperature=1.0, train=train,
                                       rngs={"gumbel": jax.random.PRNGKey(2)})
        assert ids.shape == (4, 50) and ids.dtype == jnp.int32
        np.testing.assert_allclose(np.asarray(quantized), np.asarray(params["codevectors"][0])[np.asarray(ids)],
                                   atol=1e-6)
        assert 1.0 <= float(ppl) <= 16.0
    _, ids, ppl = vq.apply({"params": params}, x, train=False)
    counts = np.bincount(np.asarray(ids).ravel(), minlength=16)
    assert float(ppl) == pytest.approx(2 ** plugin_entropy_bits(np.asarray(ids), 16), rel=1e-5)
    assert counts.sum() == 200


# ----------------------------------------------------------------------------- synthetic sources

A = np.array([[0.7, 0.2, 0.0], [-0.1, 0.5, 0.3], [0.0, 0.2, 0.6]])
Q = np.array([[1.0, 0.3, 0.0], [0.3, 0.5, 0.1], [0.0, 0.1, 0.8]])


def test_gumbel_vq_starts_where_the_gumbel_noise_still_chooses_the_code():
    # VQ-APC quantizes a layer-normed top layer (unit variance). With transformers' product-
    # quantizer init (weight N(0, 1)) its logits have std 16 at width 256, the noise changes the
    # code on ~10 % of frames, and the zoo's APC recipe collapsed to one code; with the VQ-APC
    # reference's nn.Linear scale it changes ~94 %.
    x = jax.random.normal(jax.random.PRNGKey(0), (4, 50, 256))
    vq = GumbelVQ(num_vars=128, codevector_dim=256)
    params = vq.init(jax.random.PRNGKey(1), x)["params"]
    kernel = np.asarray(params["weight_proj"]["kernel"])
    assert np.abs(kernel).max() <= 1 / 16 and np.abs(np.asarray(params["codevectors"])).max() <= 128 ** -0.5
    _, argmax_ids, _ = vq.apply({"params": params}, x, train=False)
    _, sampled_ids, _ = vq.apply({"params": params}, x, temperature=1.0, train=True,
                                 rngs={"gumbel": jax.random.PRNGKey(2)})
    assert float(jnp.mean(argmax_ids != sampled_ids)) > 0.5


def test_var_stationary_cov_and_samples():
    s = synthetic.var_stationary_cov(A, Q)
    np.testing.assert_allclose(A @ s @ A.T + Q, s, atol=1e-12)
    x = synthetic.sample_var(A, Q, num_seqs=400, length=60, seed=0)
    assert x.shape == (400, 60, 3) and x.dtype == np.float32
    # stationary from the first frame: frame 0 and frame 59 have the same covariance
    for t in (0, 59):
        np.testing.assert_allclose(np.cov(x[:, t].T), s, atol=0.25)  # 400 draws: ~0.1 std. error
    np.testing.assert_allclose(np.cov(x.reshape(-1, 3).T), s, atol=0.08)


@pytest.mark.parametrize("n", [1, 3])
def test_var_predictive_mi_closed_form_and_monte_carlo(n):
    mi = synthetic.var_predictive_mi_nats(A, Q, n)
    # the conditional-covariance form: 1/2 (log det S - log det sum_{k<n} A^k Q A^kT)
    s = synthetic.var_stationary_cov(A, Q)
    cn = sum(np.linalg.matrix_power(A, k) @ Q @ np.linalg.matrix_power(A, k).T for k in range(n))
    assert mi == pytest.approx(0.5 * (np.linalg.slogdet(s)[1] - np.linalg.slogdet(cn)[1]), rel=1e-9)
    # Monte Carlo: regress x_{t+n} on x_t (the optimal predictor is linear), Gaussian residual.
    x = synthetic.sample_var(A, Q, num_seqs=1000, length=100, seed=1).astype(np.float64)
    past, future = x[:, :-n].reshape(-1, 3), x[:, n:].reshape(-1, 3)
    coef, *_ = np.linalg.lstsq(past, future, rcond=None)
    resid = future - past @ coef
    mc = 0.5 * (np.linalg.slogdet(np.cov(future.T))[1] - np.linalg.slogdet(np.cov(resid.T))[1])
    assert mc == pytest.approx(mi, abs=0.02)  # ~100k pairs: error ~0.005 nats
    np.testing.assert_allclose(coef.T, np.linalg.matrix_power(A, n), atol=0.02)
    assert mi > synthetic.var_predictive_mi_nats(A, Q, n + 1) > 0


def test_var_errors():
    with pytest.raises(ValueError, match="spectral radius"):
        synthetic.var_stationary_cov(np.eye(2) * 1.01, np.eye(2))
    with pytest.raises(ValueError, match=r"noise_cov: expected shape \(2, 2\)"):
        synthetic.sample_var(np.eye(2) * 0.5, np.eye(3), 2, 5)
    with pytest.raises(ValueError, match="prediction shift"):
        synthetic.var_predictive_mi_nats(np.eye(2) * 0.5, np.eye(2), 0)


def test_hmm_source_statistics_and_entropy():
    trans = np.array([[0.8, 0.2, 0.0], [0.1, 0.6, 0.3], [0.25, 0.0, 0.75]])
    means = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    x, states = synthetic.sample_hmm(trans, means, 0.3, num_seqs=500, length=80, seed=0)
    assert x.shape == (500, 80, 2) and states.shape == (500, 80) and states.dtype == np.int32
    pi = synthetic.hmm_stationary(trans)
    np.testing.assert_allclose(pi @ trans, pi, atol=1e-12)
    for t in (0, 79):  # stationary from the first frame
        np.testing.assert_allclose(np.bincount(states[:, t], minlength=3) / 500, pi, atol=0.07)
    pairs = np.zeros((3, 3))
    np.add.at(pairs, (states[:, :-1].ravel(), states[:, 1:].ravel()), 1)
    np.testing.assert_allclose(pairs / pairs.sum(1, keepdims=True), trans, atol=0.01)
    np.testing.assert_allclose(x - means[states], 0.0, atol=0.3 * 6)
    assert np.std(x - means[states]) == pytest.approx(0.3, rel=0.02)
    h = synthetic.hmm_state_entropy_bits(trans)
    assert h == pytest.approx(-(pi * np.log2(pi)).sum(), rel=1e-9)
    assert plugin_entropy_bits(states.ravel(), 3) == pytest.approx(h, abs=0.01)
    assert synthetic.hmm_state_entropy_bits(np.full((4, 4), 0.25)) == pytest.approx(2.0)


def test_hmm_errors():
    with pytest.raises(ValueError, match="rows must be probability vectors"):
        synthetic.sample_hmm(np.array([[0.5, 0.4], [0.5, 0.5]]), np.zeros((2, 1)), 1.0, 2, 3)
    with pytest.raises(ValueError, match=r"means: expected \[S=2, D\]"):
        synthetic.sample_hmm(np.eye(2)[::-1], np.zeros((3, 1)), 1.0, 2, 3)
    with pytest.raises(ValueError, match="no unique stationary distribution"):
        synthetic.hmm_stationary(np.eye(2))


# ----------------------------------------------------------------------------- telephone-band view

def test_telephone_band_crops_keep_their_draw_and_lose_the_band_above_4khz():
    """train_batch(telephone_prob=p): the rows drawn for the telephone band carry nothing above
    4 kHz (energy share there < 1e-4 against ~0.5 for the white-noise input), the others and
    the crops' positions and lengths are those of p = 0 to the bit, and the draw is a function
    of (seed, step) (a resumed run sees the same batches). Fails if the band is not applied,
    applied to every row, or applied to the padding."""
    from speechmi_jax.data.audio import telephone_band
    from speechmi_jax.ssl.data import AudioSet, train_batch

    rng = np.random.default_rng(0)
    data = AudioSet([rng.standard_normal(n).astype(np.float32) for n in (9000, 16000, 5000, 20000)],
                    ["a", "b", "c", "d"])
    plain = train_batch(data, seed=3, step=3, batch_size=4, crop_samples=8000, frame_hop=320)
    half = train_batch(data, seed=3, step=3, batch_size=4, crop_samples=8000, frame_hop=320,
                       telephone_prob=0.5)
    again = train_batch(data, seed=3, step=3, batch_size=4, crop_samples=8000, frame_hop=320,
                        telephone_prob=0.5)
    np.testing.assert_array_equal(half["audio"], again["audio"])
    np.testing.assert_array_equal(half["lengths"], plain["lengths"])
    assert 5000 in plain["lengths"]  # a padded row is in the batch

    def high_share(x):
        p = np.abs(np.fft.rfft(x)) ** 2
        return p[len(p) // 2 + 20:].sum() / p.sum()

    changed = [not np.array_equal(h, p) for h, p in zip(half["audio"], plain["audio"])]
    assert 0 < sum(changed) < 4, changed  # this (seed, step) draws some rows, not all
    for h, p, n, c in zip(half["audio"], plain["audio"], half["lengths"], changed):
        assert high_share(p[:n]) > 0.4
        if c:
            assert high_share(h[:n]) < 1e-4
            np.testing.assert_array_equal(h[:n], telephone_band(p[:n]))
        assert not np.any(h[n:])  # padding stays silent
    full = train_batch(data, seed=3, step=3, batch_size=4, crop_samples=8000, frame_hop=320,
                       telephone_prob=1.0)
    assert all(high_share(h[:n]) < 1e-4 for h, n in zip(full["audio"], full["lengths"]))
