"""Flax params -> transformers directory: our loader and transformers' PyTorch model both read it.

Tiny random models (2 layers, d 32), every parameter perturbed so that a transposed kernel, a
dropped bias or a wrong weight-norm split shows. Tolerances: our own reload within 1e-5 (the
weight-norm split g * v / ||v|| rounds the positional kernel by ~1 ulp), transformers within
1e-4 (the parity tolerance of test_wav2vec2_parity.py).
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import speechmi_jax as smi
from speechmi_jax.encoders import checkpoint, export, wav2vec2
from wav2vec2_testing import PRE_LN, tiny_config, torch_hidden_states

SAMPLES = 1600  # 79 frames with the tiny stem
CASES = {
    "wav2vec2-layer-preln": ("wav2vec2", PRE_LN),
    "hubert-batchnorm-posconv": ("hubert", dict(conv_pos_batch_norm=True, feat_proj_layer_norm=False)),
    "data2vec-audio": ("data2vec-audio", {}),
}


def _perturbed_params(arch, seed=0, scale=0.3):
    params = wav2vec2.init_params(arch, jax.random.PRNGKey(seed))
    leaves, tree = jax.tree_util.tree_flatten_with_path(params)
    keys = jax.random.split(jax.random.PRNGKey(seed + 1), len(leaves))
    out = []
    for (path, p), k in zip(leaves, keys):
        size = max(float(jnp.abs(p).mean()), 0.1)
        q = p + scale * size * jax.random.normal(k, p.shape)
        if "batch_norm_var" in jax.tree_util.keystr(path):
            q = jnp.abs(q) + 0.5
        out.append(q)
    return jax.tree_util.tree_unflatten(tree, out)


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """(exported dir, mask embedding, hidden states [L + 1, T, D] of the in-memory params, of the
    reloaded params); both through the reloaded encoder's apply function (one compile)."""
    family, overrides = CASES[request.param]
    config = tiny_config(family, num_hidden_layers=2, **overrides)
    arch = wav2vec2.arch_from_config(config)
    params = _perturbed_params(arch)
    emb = jax.random.normal(jax.random.PRNGKey(9), (arch.hidden_size,))
    out = export.save_hf(config, params, tmp_path_factory.mktemp(request.param), mask_embedding=emb)
    loaded = smi.load_encoder(out)
    assert wav2vec2.arch_from_config(loaded.config) == arch
    apply = jax.jit(loaded.apply_fn)
    x, n = jnp.asarray(_waveform()), jnp.array([SAMPLES])
    want = np.asarray(apply(params, x, n).hidden_states[:, 0])
    got = np.asarray(apply(loaded.params, x, n).hidden_states[:, 0])
    return out, emb, want, got


def _waveform():
    return np.random.default_rng(0).standard_normal((1, SAMPLES)).astype(np.float32)


def test_reload_gives_the_in_memory_hidden_states(exported):
    out, _, want, got = exported
    assert got.shape == want.shape == (3, 79, 32)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=0)
    assert np.abs(want).max() > 1.0
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == [export.MODEL_CLASSES[config["model_type"]]]


def test_transformers_loads_it_and_matches(exported):
    pytest.importorskip("torch")
    import transformers

    out, emb, want, _ = exported
    model, info = transformers.AutoModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    assert type(model).__name__ == export.MODEL_CLASSES[model.config.model_type]
    np.testing.assert_array_equal(model.masked_spec_embed.detach().numpy(), np.asarray(emb))
    ref = torch_hidden_states(model.eval(), _waveform()[0])
    err = np.abs(want - ref).max(axis=(1, 2))
    assert err.max() <= 1e-4, f"max abs error per hidden state: {err}"


def test_export_errors(tmp_path):
    config = tiny_config("hubert", num_hidden_layers=2)
    arch = wav2vec2.arch_from_config(config)
    params = wav2vec2.init_params(arch, jax.random.PRNGKey(0))
    bad = jax.tree.map(lambda p: p, params)
    bad["encoder"]["layers"]["attention"]["q_proj"]["kernel"] = jnp.zeros((2, 32, 16))
    with pytest.raises(checkpoint.CheckpointError, match=r"q_proj\.weight of shape \(16, 32\), expected \(32, 32\)"):
        export.save_hf(config, bad, tmp_path)
    del bad["encoder"]["layers"]["attention"]["q_proj"]
    with pytest.raises(checkpoint.CheckpointError, match=r"missing leaf encoder/layers/attention/q_proj/kernel"):
        export.save_hf(config, bad, tmp_path)
    with pytest.raises(ValueError, match=r"model_type 'whisper' cannot be exported"):
        export.save_hf({"model_type": "whisper"}, params, tmp_path)
    with pytest.raises(ValueError, match=r"mask_embedding: expected shape \(32,\)"):
        export.save_hf(config, params, tmp_path, mask_embedding=np.zeros(8))
    assert not (tmp_path / "model.safetensors").exists()
