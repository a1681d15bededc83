"""SSL objectives against known answers: APC's bound on a Gaussian VAR(1) process approaches the
closed-form I(past; x_{t+n}) from below; HuBERT-style MLM on a hidden-Markov source reports the
plug-in entropy of its fitted codes, never bounds above it, and beats the prior."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from speechmi_jax.estimators import kmeans
from speechmi_jax.ssl import objectives, synthetic
from speechmi_jax.ssl.data import fit_codes
from speechmi_jax.ssl.masking import span_mask
from speechmi_jax.units import nats_to_bits

A = np.array([[0.8, 0.3], [-0.2, 0.7]])
Q = np.array([[1.0, 0.4], [0.4, 0.5]])
SHIFT = 2


def _fit(loss_fn, params, steps, lr):
    tx = optax.adam(lr)

    @jax.jit
    def run(params):
        def body(carry, key):  # loss_fn(params, key): a fresh key (masking) every step
            p, s = carry
            g = jax.grad(loss_fn)(p, key)
            u, s = tx.update(g, s, p)
            return (optax.apply_updates(p, u), s), None
        keys = jax.random.split(jax.random.PRNGKey(123), steps)
        return jax.lax.scan(body, (params, tx.init(params)), keys)[0][0]

    return run(params)


def test_apc_gaussian_bound_approaches_var_closed_form_from_below():
    truth = nats_to_bits(synthetic.var_predictive_mi_nats(A, Q, SHIFT))
    x_train = jnp.asarray(synthetic.sample_var(A, Q, 64, 200, seed=1))
    x_test = jnp.asarray(synthetic.sample_var(A, Q, 64, 200, seed=2))
    mask = jnp.ones(x_train.shape[:2], bool)

    def metrics(p, x):  # a linear context network: the optimal predictor is A^n x_t
        return objectives.apc(x @ p["w"] + p["b"], x, mask, SHIFT, p_psi="gaussian")

    p0 = {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}
    before = metrics(p0, x_test)
    p = _fit(lambda p, _: metrics(p, x_train)["loss"], p0, 400, 0.05)  # trained with APC's L1 loss
    after = metrics(p, x_test)
    oracle = metrics({"w": jnp.asarray(np.linalg.matrix_power(A, SHIFT).T, jnp.float32),
                      "b": jnp.zeros(2)}, x_test)
    # Tolerances: held-out plug-in estimates over 12.7k frames (std ~0.01 bits); the L1-trained
    # predictor gets within 0.05 bits of the closed form (truth ~0.72 bits), never 0.03 above it.
    assert before["bound_bits"] < 0.1
    assert truth - 0.05 < float(after["bound_bits"]) < truth + 0.03, (float(after["bound_bits"]), truth)
    assert abs(float(oracle["bound_bits"]) - truth) < 0.03
    assert float(after["bound_bits"]) <= float(oracle["bound_bits"]) + 0.01
    # H(Z_target) of a Gaussian target is its Gaussian entropy: the stationary covariance's.
    s = synthetic.var_stationary_cov(A, Q)
    h_true = nats_to_bits(0.5 * np.log(np.linalg.det(2 * np.pi * np.e * s)))
    assert abs(float(after["h_target_bits"]) - h_true) < 0.05


def test_apc_shift_pairs_only_real_frames():
    x = jnp.arange(12, dtype=jnp.float32).reshape(2, 6, 1)
    mask = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    target, w = objectives.shift_targets(x, mask, 2)
    np.testing.assert_array_equal(w, [[1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])
    np.testing.assert_array_equal(target[0, :4, 0], [2, 3, 4, 5])


def test_apc_past_reconstructs_only_heard_real_frames():
    """Multi-target APC's auxiliary loss: slot m is frame t-m, paired only where both frames are
    real. Catches: the offsets running forward (x_{t+m}), slots swapped, pairs across the crop's
    start or into padding counted."""
    x = jnp.arange(12, dtype=jnp.float32).reshape(2, 6, 1)
    mask = jnp.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    target, w = objectives.shift_targets(x, mask, -1)
    np.testing.assert_array_equal(w, [[0, 1, 1, 1, 1, 1], [0, 1, 1, 1, 0, 0]])
    np.testing.assert_array_equal(target[0, 1:, 0], [0, 1, 2, 3, 4])
    exact = jnp.stack([x, jnp.roll(x, 1, axis=1)], axis=2)  # [B, T, M=2, D]
    assert float(objectives.apc_past(exact, x, mask)) == 0.0
    # slot 1 off by 3 at every frame: its mean L1 is 3 over its real pairs, slot 0's 0
    off = exact.at[:, :, 1].add(3.0)
    assert float(objectives.apc_past(off, x, mask)) == pytest.approx(1.5)
    # garbage where a pair is not real (t = 0 of slot 1, padding) does not count
    junk = exact.at[:, 0, 1].set(100.0).at[1, 4:].set(-50.0)
    assert float(objectives.apc_past(junk, x, mask)) == 0.0


def test_multi_target_apc_adds_the_weighted_past_loss_and_trains_its_head():
    """APC with ``past_frames``: the loss is the t+n view's plus ``past_weight`` times the past
    reconstruction, whose head gets gradient only when weighted; the bound is the t+n view's
    alone. Catches: the weight ignored, the auxiliary term leaking into the reported bound."""
    from speechmi_jax.encoders import logmel_transformer as lmt
    from speechmi_jax.ssl import models
    arch = lmt.MelArch(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=64, causal=True,
                       pos_conv_kernel=4, pos_conv_groups=2)
    task = models.APCTask(arch, past_frames=2)
    params, aux = task.init(jax.random.PRNGKey(0))
    rng = np.random.default_rng(0)
    batch = {"audio": jnp.asarray(rng.normal(size=(2, 3200)), jnp.float32),
             "lengths": jnp.asarray([3200, 2400], jnp.int32)}
    key = jax.random.PRNGKey(1)
    losses, grads = {}, {}
    for w in (0.0, 0.5):
        hp = {"shift": jnp.int32(2), "past_weight": jnp.float32(w)}
        (losses[w], m), grads[w] = jax.value_and_grad(task.loss, has_aux=True)(
            params, aux, batch, key, hp, True)
    plain = models.APCTask(arch).loss({k: v for k, v in params.items() if k != "past_head"},
                                      aux, batch, key, {"shift": jnp.int32(2)}, True)
    assert float(losses[0.0]) == pytest.approx(float(plain[0]), rel=1e-6)
    assert float(m["past_l1"]) > 0.1
    assert float(losses[0.5]) == pytest.approx(float(losses[0.0]) + 0.5 * float(m["past_l1"]), rel=1e-6)
    assert float(m["bound_bits"]) == pytest.approx(float(plain[1]["bound_bits"]), rel=1e-6)
    head = lambda g: float(jnp.abs(g["past_head"]["kernel"]).sum())  # noqa: E731
    assert head(grads[0.0]) == 0.0 and head(grads[0.5]) > 0.0


def test_mlm_on_hmm_source_reports_code_entropy_and_beats_prior():
    k, d = 4, 3
    trans = np.full((k, k), 0.04) + np.eye(k) * (1 - 0.04 * k)  # sticky: neighbours tell the state
    means = 3.0 * np.eye(k, d + 1)[:, :d] - 1.0 * (np.arange(k) == 3)[:, None]
    x, _ = synthetic.sample_hmm(trans, means, 0.5, 48, 64, seed=0)
    x_dev, _ = synthetic.sample_hmm(trans, means, 0.5, 48, 64, seed=1)
    centroids = fit_codes(x.reshape(-1, d), k, seed=0)
    codes = jnp.asarray(kmeans.kmeans_assign(x.reshape(-1, d), centroids)).reshape(x.shape[:2])
    codes_dev = jnp.asarray(kmeans.kmeans_assign(x_dev.reshape(-1, d), centroids)).reshape(x.shape[:2])
    h_codes = kmeans.plugin_entropy_bits(np.asarray(codes).reshape(-1), k)
    assert abs(h_codes - synthetic.hmm_state_entropy_bits(trans)) < 0.1  # well-separated states
    real = jnp.ones(x.shape[:2], bool)

    def metrics(p, x, codes, key):  # masked frames -> a learned embedding; a 5-tap conv context
        masked = span_mask(key, real, 0.3, 2)
        inp = jnp.where(masked[..., None], p["emb"], x)
        h = jax.nn.relu(jax.lax.conv_general_dilated(inp, p["conv"], (1,), [(2, 2)],
                                                     dimension_numbers=("NWC", "WIO", "NWC")))
        return objectives.mlm(h @ p["out"], codes, masked, h_codes)

    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    p0 = {"emb": jnp.zeros(d), "conv": 0.3 * jax.random.normal(keys[0], (5, d, 32)),
          "out": 0.3 * jax.random.normal(keys[1], (32, k))}
    p = _fit(lambda p, key: metrics(p, jnp.asarray(x), codes, key)["loss"], p0, 300, 0.02)
    prior = np.bincount(np.asarray(codes).reshape(-1), minlength=k).max() / codes.size
    for i in range(3):  # several maskings of held-out sequences
        m = metrics(p, jnp.asarray(x_dev), codes_dev, jax.random.PRNGKey(10 + i))
        assert abs(float(m["h_target_bits"]) - h_codes) < 1e-6  # the logged H is the codes' plug-in
        assert float(m["bound_bits"]) <= float(m["h_target_bits"])
        assert float(m["masked_acc"]) > prior + 0.3, (float(m["masked_acc"]), prior)
        assert float(m["bound_bits"]) > 0.2  # an untrained predictor scores <= 0 bits


def test_mlm_unmasked_weight_adds_the_unmasked_real_frames_mean_loss_only():
    """HuBERT's loss on unmasked frames: the mean CE over unmasked *real* frames (padding never
    counts), weighted; the reported bound stays the masked frames' (the Table 1 view)."""
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(2, 6, 5)), jnp.float32)
    codes = jnp.asarray(rng.integers(0, 5, size=(2, 6)))
    real = jnp.asarray([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], bool)
    masked = jnp.asarray([[0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], bool)
    ce = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(codes)[..., None], -1)[..., 0]
    m_ce = ce[np.asarray(masked)].mean()
    u_ce = ce[np.asarray(real & ~masked)].mean()  # 3 + 3 unmasked real frames; 2 padded left out
    base = objectives.mlm(logits, codes, masked, 2.0)
    both = objectives.mlm(logits, codes, masked, 2.0, real=real, unmasked_weight=0.5)
    np.testing.assert_allclose(float(base["loss"]), m_ce, rtol=1e-6)
    np.testing.assert_allclose(float(both["loss"]), m_ce + 0.5 * u_ce, rtol=1e-6)
    np.testing.assert_allclose(float(both["bound_bits"]), float(base["bound_bits"]), rtol=1e-6)
    np.testing.assert_allclose(float(both["bound_bits"]), 2.0 - m_ce / np.log(2), rtol=1e-5)
