"""Our Flax wav2vec 2.0 family vs transformers' PyTorch models, every hidden state.

Tolerance: max abs error <= 1e-4 in float32 (observed ~5e-6 on activations of size ~5).
Padded batches are compared against per-utterance PyTorch runs: the package promises that
padding never changes a real frame (transformers' own batched group-norm models do not).
"""

from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import speechmi_jax as smi
from speechmi_jax.encoders import wav2vec2
from wav2vec2_testing import PRE_LN, backbone, tiny_config, torch_hidden_states, torch_model

ATOL = 1e-4
SAMPLES = 1600  # 79 frames with the tiny stem

CASES = {
    "wav2vec2-group-postln": ("wav2vec2", {}, None),
    "wav2vec2-layer-preln-ctc": ("wav2vec2", dict(PRE_LN, vocab_size=12), "Wav2Vec2ForCTC"),
    "hubert-batchnorm-posconv-noprojln": (
        "hubert", dict(conv_pos_batch_norm=True, feat_proj_layer_norm=False), None),
    "hubert-layer-preln": ("hubert", dict(PRE_LN, feat_proj_layer_norm=True), None),
    "wavlm-group-postln": ("wavlm", {}, None),
    "wavlm-layer-preln": ("wavlm", PRE_LN, None),
    "data2vec-audio-convbias": ("data2vec-audio", dict(conv_bias=True), None),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request, tmp_path_factory):
    family, overrides, model_cls = CASES[request.param]
    model = torch_model(tiny_config(family, **overrides), model_cls)
    path = tmp_path_factory.mktemp(request.param)
    model.save_pretrained(path)
    return model, path


def _waveforms(lengths, total, seed=0):
    """[B, total] float32; samples past each length are loud noise, which must not matter."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((len(lengths), total)).astype(np.float32)
    for i, n in enumerate(lengths):
        x[i, n:] = 10.0 * rng.standard_normal(total - n)
    return x


def test_single_utterance_matches_torch(case):
    model, path = case
    enc = smi.load_encoder(path)
    x = _waveforms([SAMPLES], SAMPLES)
    out = enc(x, np.array([SAMPLES]))
    ref = torch_hidden_states(model, x[0])
    ours = np.asarray(out.hidden_states[:, 0])
    assert ours.shape == ref.shape == (enc.num_layers + 1, 79, enc.hidden_size)
    assert np.asarray(out.mask).all()
    err = np.abs(ours - ref).max(axis=(1, 2))
    assert err.max() <= ATOL, f"max abs error per hidden state: {err}"
    assert np.abs(ref).max() > 1.0  # the comparison is not between near-zero tensors


def test_padded_batch_matches_per_utterance_torch(case):
    model, path = case
    enc = smi.load_encoder(path)
    lengths = np.array([SAMPLES, 1130, 555])
    x = _waveforms(lengths, SAMPLES, seed=1)
    out = enc(x, lengths)
    frames = enc.num_frames(lengths)
    assert frames.tolist() == backbone(model)._get_feat_extract_output_lengths(
        __import__("torch").tensor(lengths)).tolist()
    mask = np.asarray(out.mask)
    for i, (n, t) in enumerate(zip(lengths, frames)):
        assert mask[i].sum() == t and mask[i, :t].all()
        ref = torch_hidden_states(model, x[i, :n])
        ours = np.asarray(out.hidden_states[:, i, :t])
        err = np.abs(ours - ref).max(axis=(1, 2))
        assert err.max() <= ATOL, f"utterance {i} ({n} samples): max abs error per state {err}"


def test_old_weight_norm_spelling_loads_the_same(tmp_path):
    """Hub checkpoints from older torch spell the positional conv's weight norm weight_g/weight_v."""
    model = torch_model(tiny_config("hubert"))
    new, old = tmp_path / "new", tmp_path / "old"
    model.save_pretrained(new)
    model.save_pretrained(old)
    state = load_file(new / "model.safetensors")
    assert "encoder.pos_conv_embed.conv.parametrizations.weight.original0" in state
    renamed = {k.replace("parametrizations.weight.original0", "weight_g")
                .replace("parametrizations.weight.original1", "weight_v"): v for k, v in state.items()}
    assert "encoder.pos_conv_embed.conv.weight_g" in renamed
    save_file(renamed, old / "model.safetensors", metadata={"format": "pt"})
    x = _waveforms([SAMPLES], SAMPLES)
    a = np.asarray(smi.load_encoder(new)(x, [SAMPLES]).hidden_states)
    b = np.asarray(smi.load_encoder(old)(x, [SAMPLES]).hidden_states)
    np.testing.assert_array_equal(a, b)
    assert np.abs(b[:, 0] - torch_hidden_states(model, x[0])).max() <= ATOL


def test_weight_norm_is_over_dim_2():
    """w = g * v / ||v||, the norm per kernel tap (dim 2), as torch weight_norm(dim=2)."""
    torch = pytest.importorskip("torch")
    conv = torch.nn.Conv1d(8, 8, 5, groups=2)
    conv = torch.nn.utils.parametrizations.weight_norm(conv, name="weight", dim=2)
    with torch.no_grad():
        conv.parametrizations.weight.original0.mul_(torch.rand(1, 1, 5) + 0.5)
        ref = conv.weight.numpy()
        g = conv.parametrizations.weight.original0.numpy()
        v = conv.parametrizations.weight.original1.numpy()
    np.testing.assert_allclose(wav2vec2.weight_norm(g, v, dim=2), ref, rtol=1e-6, atol=1e-7)


def test_base_size_hubert_matches_torch(tmp_path):
    """A full-size HuBERT-base (HubertConfig() defaults: 12 layers, 768 wide, kernel-128
    positional conv, 512-channel stem), random perturbed weights, 1 s and a padded 0.6 s."""
    model = torch_model(wav2vec2.random_config("hubert-base"), seed=3)
    model.save_pretrained(tmp_path)
    enc = smi.load_encoder(tmp_path)
    assert (enc.num_layers, enc.hidden_size) == (12, 768)
    lengths = np.array([16000, 9600])
    x = _waveforms(lengths, 16000, seed=2)
    out = enc(x, lengths)
    for i, n in enumerate(lengths):
        t = int(enc.num_frames(n))
        ref = torch_hidden_states(model, x[i, :n])
        err = np.abs(np.asarray(out.hidden_states[:, i, :t]) - ref).max(axis=(1, 2))
        assert err.max() <= ATOL, f"utterance {i}: max abs error per state {err}"


def test_frame_facts_of_the_standard_stem():
    arch = wav2vec2.arch_from_config(wav2vec2.random_config("wavlm-base"))
    assert arch.receptive_field == 400 and arch.hop == 320
    lengths = np.array([399, 400, 719, 720, 16000, 160000])
    np.testing.assert_array_equal(wav2vec2.num_frames(arch, lengths), [0, 1, 1, 2, 49, 499])
    enc = wav2vec2.make_encoder(arch, params=None, name="facts")
    assert enc.frame_rate == 50.0 and enc.frame_offset_s == 0.0125 and enc.sample_rate == 16000


@pytest.mark.parametrize("name", sorted(wav2vec2.RANDOM_ARCHS))
def test_random_arch_state_dict_layout_matches_transformers(name):
    """Our expected keys and shapes for each named architecture == transformers' model
    (built on the meta device: no weights allocated), heads and masked_spec_embed aside."""
    torch = pytest.importorskip("torch")
    import transformers
    config = wav2vec2.random_config(name)
    cls = getattr(transformers, {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel",
                                 "data2vec-audio": "Data2VecAudioModel"}[config.model_type])
    with torch.device("meta"):
        model = cls(config)
    found = {k: tuple(v.shape) for k, v in model.state_dict().items() if k != "masked_spec_embed"}
    assert wav2vec2.expected_state_dict_shapes(wav2vec2.arch_from_config(config)) == found


def test_random_init_runs_and_depends_on_seed():
    a = smi.load_encoder("random:wavlm-base@1")
    b = wav2vec2.random_wav2vec2_family("wavlm-base", seed=2)
    x = _waveforms([4000], 4000)
    ha = np.asarray(a(x, [4000]).hidden_states)
    assert ha.shape == (13, 1, 12, 768) and np.isfinite(ha).all() and ha.std() > 0.1
    qa = a.params["encoder"]["layers"]["attention"]["q_proj"]["kernel"]
    qb = b.params["encoder"]["layers"]["attention"]["q_proj"]["kernel"]
    assert qa.shape == (12, 768, 768) and float(np.abs(qa - qb).max()) > 1e-2
    # layers are not copies of each other (nn.scan splits the init rng per layer); std ~ 0.02
    assert float(np.abs(qa[0] - qa[1]).max()) > 1e-2 and abs(float(qa.std()) - 0.02) < 2e-3
    assert a.apply_fn is b.apply_fn  # one architecture, one forward (compiled once)


def test_bfloat16_forward_is_close():
    model = torch_model(tiny_config("wav2vec2"))
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        model.save_pretrained(d)
        enc = smi.load_encoder(d, dtype=__import__("jax").numpy.bfloat16)
    x = _waveforms([SAMPLES], SAMPLES)
    out = enc(x, [SAMPLES])
    assert out.hidden_states.dtype == np.dtype("bfloat16") or str(out.hidden_states.dtype) == "bfloat16"
    ref = torch_hidden_states(model, x[0])
    err = np.abs(np.asarray(out.hidden_states[:, 0], np.float32) - ref).max()
    assert err < 0.1 * np.abs(ref).max(), err
