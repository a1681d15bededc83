"""The bank: one banked run equals per-layer runs, and 8 devices give what 1 device gives."""

import jax
import numpy as np
import pytest

from speechmi_jax.estimators import api, known

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
