"""The bank: one banked run equals per-layer runs, and 8 devices give what 1 device gives."""

import jax
import numpy as np
import pytest

from speechmi_jax.estimators import api, known
from speechmi_jax.estimators.bank import Grid

# Two layers with different class separations, 3 classes, 100 utterances of 40 frames.
PRIORS, MEANS = known.class_gaussians(num_classes=3, dim=6, separation=0.7, seed=0)
Z0, Y = known.sample_classes(PRIORS, MEANS, 4000, seed=1)
Z = np.stack([Z0, Z0 * np.array([1, 1, 1, 0, 0, 0], np.float32)
              + np.random.default_rng(2).normal(size=Z0.shape).astype(np.float32)])
GROUPS = np.arange(4000) // 40
SPLIT = np.where(GROUPS < 60, "train", np.where(GROUPS < 75, "dev", "test"))
ADAM = dict(optimizer="adam", learning_rates=(0.01, 0.1), seeds=(0, 1), steps=120, eval_every=20,
            batch_size=512)


def run(devices, mesh_shape=None, z=Z):
    return api.probe_bank(z, Y, GROUPS, SPLIT, devices=devices, mesh_shape=mesh_shape, **ADAM)


@pytest.fixture(scope="module")
def one_device():
    return run(jax.devices()[:1])


def test_banked_layers_equal_separate_runs(one_device):
    assert [e.layer for e in one_device] == [0, 1]
    assert one_device[0].bits > one_device[1].bits + 0.1  # layer 1 lost half the signal
    for layer in range(2):
        (alone,) = run(jax.devices()[:1], z=Z[layer:layer + 1])
        assert alone.bits == pytest.approx(one_device[layer].bits, abs=1e-5)
        assert (alone.lr, alone.seed, alone.step) == (
            one_device[layer].lr, one_device[layer].seed, one_device[layer].step)


@pytest.mark.parametrize("mesh_shape", [(8, 1), (2, 4)])
def test_eight_devices_match_one(one_device, mesh_shape):
    # Sharding changes only the order of float32 reductions: estimates agree to 1e-4 bits and the
    # dev selection (grid point and step) is identical.
    assert len(jax.devices()) == 8
    eight = run(jax.devices(), mesh_shape)
    for a, b in zip(eight, one_device):
        assert a.bits == pytest.approx(b.bits, abs=1e-4)
        assert a.ci == pytest.approx(b.ci, abs=1e-4)
        assert (a.lr, a.seed, a.step) == (b.lr, b.seed, b.step)


def test_selection_uses_dev_not_test(one_device):
    # Corrupting the test labels' features must not change the chosen grid point or step.
    z = Z.copy()
    z[:, SPLIT == "test"] = np.random.default_rng(9).normal(size=z[:, SPLIT == "test"].shape)
    moved = run(jax.devices()[:1], z=z)
    for a, b in zip(moved, one_device):
        assert (a.lr, a.seed, a.step) == (b.lr, b.seed, b.step)
        assert a.bits < b.bits


def test_float16_memmap_input(tmp_path, one_device):
    mm = np.lib.format.open_memmap(tmp_path / "z.npy", mode="w+", dtype=np.float16, shape=Z.shape)
    mm[:] = Z
    mm.flush()
    est = api.probe_bank(np.load(tmp_path / "z.npy", mmap_mode="r"), Y, GROUPS, SPLIT,
                         devices=jax.devices()[:1], layer_chunk=1, **ADAM)
    for a, b in zip(est, one_device):
        assert a.bits == pytest.approx(b.bits, abs=0.01)  # float16 rounding of the features



def test_chunk_features_freed_once_on_device(monkeypatch):
    # fit_layer_chunks hands each chunk's host arrays to the devices and must drop them before
    # training: device_put copies, so otherwise a chunk's features sit in memory twice while
    # its bank trains. The problem's init runs (at trace time) after the hand-over and checks.
    # gc is off, so nothing but the release frees them. Estimates must not change.
    import dataclasses
    import gc
    import weakref

    from speechmi_jax.estimators import probe, train

    monkeypatch.setattr(train, "RELEASE_MIN_BYTES", 0)  # these test arrays are tiny

    def copied(a):
        # A CPU device_put aliases a 64-byte-aligned host array (no second copy, and the
        # source rightly lives on): give every array an address that forces a copy.
        buf = np.empty(a.nbytes + 64, np.uint8)
        start = (16 - buf.ctypes.data) % 64
        out = buf[start:start + a.nbytes].view(a.dtype).reshape(a.shape)
        out[...] = a
        assert out.ctypes.data % 64 == 16
        return out

    y = Y.astype(np.int32)
    idx = [np.flatnonzero(SPLIT == s) for s in ("train", "dev", "test")]
    base = probe.probe_problem("linear", probe.log_prior(y[idx[0]], 3))
    loaded, freed_at_init = [], []

    def init(key, in_dims):
        freed_at_init.append([r() is None for r in loaded])
        return base.init(key, in_dims)

    problem = dataclasses.replace(base, init=init)
    config = train.train_config("lbfgs", 10, None, 5, devices=jax.devices()[:1])
    grid = Grid.product([0.0], l2=(1e-3,))

    def load(chunk):
        out = [{"x": copied(Z[chunk][:, i]), "y": y[i], "w": np.ones(i.size, np.float32)} for i in idx]
        loaded.extend(weakref.ref(d["x"]) for d in out)
        return out

    was = gc.isenabled()
    gc.disable()
    try:
        chunked = train.fit_layer_chunks(problem, grid, config, 2, load, lambda r, j, l: r.test["loss"][j],
                                         (6, 3), bytes_per_layer=1)
    finally:
        if was:
            gc.enable()
    assert freed_at_init and freed_at_init[0] == [True] * 3
    kept = train.fit_bank(base, grid, config, *[{"x": Z[:, i], "y": y[i], "w": np.ones(i.size, np.float32)}
                                                 for i in idx], (6, 3))
    for j in range(2):
        np.testing.assert_allclose(chunked[j], kept.test["loss"][j], rtol=1e-5, atol=1e-6)


def test_initial_state_is_the_same_compiled_whole_or_op_by_op():
    # init_state is one compiled program; run op by op (as it ran before) it must give the same
    # bits, or every estimate trained from it moves (XLA folds the He scale into its neighbours
    # unless bank.he_normal's barriers stop it: 1-ulp differences, then bounds ~0.05 bits apart).
    from speechmi_jax.estimators import bank, infonce

    grid = Grid.product((1e-3, 3e-3), seeds=(0, 1))
    problem = infonce.infonce_problem("separable", k=8, hidden=32, embed=16)
    compiled = bank.init_state(problem, "adam", grid, 3, (24, 24), seed=0, layer_ids=[0, 2, 5])
    with jax.disable_jit():
        eager = bank.init_state(problem, "adam", grid, 3, (24, 24), seed=0, layer_ids=[0, 2, 5])
    assert jax.tree.structure(compiled) == jax.tree.structure(eager)
    for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    w = np.asarray(compiled["params"]["f"]["w1"])  # [L, P, 24, 32]
    assert w.std() > 0.1 and not np.array_equal(w[0, 0], w[1, 0])  # random, per layer
