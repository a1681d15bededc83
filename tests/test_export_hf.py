"""Flax params -> transformers directory: our loader and transformers' PyTorch model both read it.

Tiny random models (2 layers, d 32) of wav2vec2, HuBERT, data2vec-audio and WavLM, no parameter at
its trivial init value, so that a transposed kernel, a dropped bias or a wrong weight-norm split
shows. Tolerances: our own reload within 1e-5 (the
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
    "wavlm": ("wavlm", {}),  # relative position bias and gated-attention constants
}


def _random_params(arch, seed=0):
    """Random parameters of the module's shapes (numpy, no Flax init: seconds faster per model).

    Kernels N(0, 1 / fan_in); norm scales 1 + 0.3 N; biases and BatchNorm means 0.3 N; BatchNorm
    variances 0.5 + U[0, 1): nothing is at its trivial init value.
    """
    shapes = jax.eval_shape(lambda: wav2vec2.init_params(arch, jax.random.PRNGKey(0)))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name, shape = jax.tree_util.keystr(path), leaf.shape
        noise = rng.standard_normal(shape)
        if name.endswith("['batch_norm_var']"):
            return 0.5 + rng.random(shape)
        if name.endswith("['scale']") or name.endswith("['batch_norm_scale']"):
            return 1.0 + 0.3 * noise
        if "kernel" in name or "rel_attn_embed" in name:
            stacked = "['layers']" in name and "['encoder']" in name
            fan_in = int(np.prod(shape[1 if stacked else 0:-1]))
            return noise / np.sqrt(max(fan_in, 1))
        return 0.3 * noise

    return jax.tree_util.tree_map_with_path(lambda p, l: np.asarray(draw(p, l), np.float32), shapes)


@pytest.fixture(scope="module", params=sorted(CASES))
def exported(request, tmp_path_factory):
    """(exported dir, mask embedding, hidden states [L + 1, T, D] of the in-memory params, of the
    reloaded params); both through the reloaded encoder's apply function (one compile)."""
    family, overrides = CASES[request.param]
    config = tiny_config(family, num_hidden_layers=2, **overrides)
    arch = wav2vec2.arch_from_config(config)
    params = _random_params(arch)
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
    params = _random_params(arch)
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


def test_wav2vec2_pretraining_head_round_trips_and_matches_transformers(tmp_path):
    torch = pytest.importorskip("torch")
    import flax.linen as nn
    import transformers

    from speechmi_jax.ssl.quantizer import GumbelProductQuantizer

    config = tiny_config("wav2vec2", num_hidden_layers=2, num_codevector_groups=2, num_codevectors_per_group=8,
                         codevector_dim=16, proj_codevector_dim=12)
    arch = wav2vec2.arch_from_config(config)
    params = _random_params(arch)
    feats = jax.random.normal(jax.random.PRNGKey(3), (1, 5, 16))  # [B, T, conv_dim[-1]]
    head = {"quantizer": GumbelProductQuantizer(2, 8, 16).init(jax.random.PRNGKey(4), feats)["params"],
            "project_q": nn.Dense(12).init(jax.random.PRNGKey(5), jnp.zeros((1, 16)))["params"],
            "project_hid": nn.Dense(12).init(jax.random.PRNGKey(6), jnp.zeros((1, 32)))["params"]}
    emb = jax.random.normal(jax.random.PRNGKey(7), (32,))
    out = export.save_hf(config, params, tmp_path, mask_embedding=emb, pretraining_head=head)
    assert json.loads((out / "config.json").read_text())["architectures"] == ["Wav2Vec2ForPreTraining"]

    # our side: the backbone loads (the head is dropped) and the head reads back unchanged
    loaded = smi.load_encoder(out)
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    back = export.read_pretraining_head(out)
    assert jax.tree.structure(back) == jax.tree.structure(jax.tree.map(np.asarray, head))
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(head)):
        np.testing.assert_array_equal(a, np.asarray(b))

    # transformers' side: every key present, and its quantizer + projections agree with ours
    model, info = transformers.Wav2Vec2ForPreTraining.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"], info
    np.testing.assert_array_equal(model.wav2vec2.masked_spec_embed.detach().numpy(), np.asarray(emb))
    model.eval()
    x = torch.from_numpy(_waveform())
    with torch.no_grad():
        base = model.wav2vec2(x)
        ref = model(x)
    extract = jnp.asarray(base.extract_features.numpy())
    quantized, ppl, _ = GumbelProductQuantizer(2, 8, 16).apply({"params": head["quantizer"]}, extract)
    proj_q = nn.Dense(12).apply({"params": head["project_q"]}, quantized)
    proj_hid = nn.Dense(12).apply({"params": head["project_hid"]}, jnp.asarray(base.last_hidden_state.numpy()))
    np.testing.assert_allclose(np.asarray(proj_q), ref.projected_quantized_states.numpy(), atol=1e-5)
    np.testing.assert_allclose(np.asarray(proj_hid), ref.projected_states.numpy(), atol=1e-5)
    assert float(ppl) == pytest.approx(float(ref.codevector_perplexity), rel=1e-5)

    with pytest.raises(ValueError, match="only wav2vec2 has a pretraining head"):
        export.save_hf(tiny_config("hubert", num_hidden_layers=2), params, tmp_path / "h", pretraining_head=head)
    bad = {**head, "project_q": {"kernel": jnp.zeros((16, 7)), "bias": jnp.zeros(7)}}
    with pytest.raises(checkpoint.CheckpointError, match=r"project_q\.weight of shape \(7, 16\), expected \(12, 16\)"):
        export.save_hf(config, params, tmp_path / "b", pretraining_head=bad)
