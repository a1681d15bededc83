"""wav2vec 2.0, HuBERT, WavLM and data2vec-audio encoders: one Flax backbone, every hidden state.

The four families share one architecture (Baevski et al. 2020, arXiv:2006.11477; Hsu et al.
2021, arXiv:2106.07447; Chen et al. 2022, arXiv:2110.13900; Baevski et al. 2022,
arXiv:2202.03555), reproduced here from ``transformers`` 5.24's PyTorch modules:

  waveform [B, S] -> conv stem (7 strided conv layers, 320x downsampling at 16 kHz)
    -> [B, T, C] -> feature projection (optional LayerNorm, Linear C -> D)
    -> + positional conv (weight-normed grouped conv, kernel 128; HuBERT's BatchNorm variant;
         data2vec-audio's stack of 5 convs, kernel 19, with affine-free LayerNorms)
    -> (post-LN models: LayerNorm) = hidden_states[0]
    -> L transformer layers (post-LN, or pre-LN "stable layer norm" for large models;
       WavLM adds a gated relative position bias computed in layer 0 and shared)
    -> hidden_states[1..L]; pre-LN models apply the encoder's final LayerNorm to the last.

Switches read from the Hugging Face config (:class:`Arch`): ``feat_extract_norm``
(``group``: a per-channel GroupNorm after conv 0 only; ``layer``: a LayerNorm after every
conv), ``conv_bias``, ``feat_proj_layer_norm``, ``do_stable_layer_norm``,
``conv_pos_batch_norm``, data2vec's ``num_conv_pos_embeddings`` x ``conv_pos_kernel_size``
stack, WavLM's ``num_buckets`` / ``max_bucket_distance``.

Padding invariance (stronger than ``transformers``): an utterance in a padded batch gets the
same hidden states as alone. The first conv layer's GroupNorm takes its statistics over real
frames only, padded frames are zeroed before every positional conv, and attention masks
padded keys. Padded frames of the output hold unspecified values: use ``mask``.

Shapes: ``hidden_states`` [L + 1, B, T, D], ``mask`` [B, T] with
T = num_frames(S) (``T = floor((S - 400) / 320) + 1`` for the standard stem at 16 kHz).
The apply function is jitted per input shape: pad a batch to
:func:`speechmi_jax.encoders.base.bucket_length` of its longest item (1 s, 1.25 s, 1.5625 s,
... growing by 1.25x, each a multiple of 320 samples), so a corpus of 1-30 s utterances
compiles about 16 shapes.

Parameters are float32; ``dtype=jnp.bfloat16`` runs matmuls/convs in bfloat16 (norm
statistics and softmax stay float32).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from pathlib import Path
from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from speechmi_jax.encoders import checkpoint
from speechmi_jax.encoders.base import Encoder, EncoderOutput, merge_heads, split_heads

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16000

# model_type -> the attribute name transformers' task heads prefix the backbone with.
PREFIXES = {"wav2vec2": "wav2vec2", "hubert": "hubert", "wavlm": "wavlm",
            "data2vec-audio": "data2vec_audio"}
BACKBONE_ROOTS = ("feature_extractor.", "feature_projection.", "encoder.")

ACTIVATIONS = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # torch/HF "gelu" is exact erf
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


@dataclasses.dataclass(frozen=True)
class Arch:
    """Every switch the backbone needs; built from a transformers config by :func:`arch_from_config`."""

    model_type: str
    conv_dim: tuple[int, ...]
    conv_kernel: tuple[int, ...]
    conv_stride: tuple[int, ...]
    conv_bias: bool
    feat_extract_norm: str  # "group" (GroupNorm after conv 0 only) | "layer" (LayerNorm after each)
    feat_proj_layer_norm: bool
    hidden_size: int
    num_layers: int
    num_heads: int
    intermediate_size: int
    layer_norm_eps: float
    stable_layer_norm: bool  # pre-LN transformer layers + final encoder LayerNorm
    pos_conv: str  # "weight_norm" | "batch_norm" (HuBERT conv_pos_batch_norm) | "stack" (data2vec)
    pos_conv_kernel: int
    pos_conv_groups: int
    pos_conv_layers: int
    rel_pos_buckets: int  # 0: no relative position bias; WavLM: num_buckets
    rel_pos_max_distance: int
    hidden_act: str
    feat_extract_activation: str

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def hop(self) -> int:
        return int(np.prod(self.conv_stride))

    @property
    def receptive_field(self) -> int:
        """Samples seen by one output frame: k_0 + sum_i (k_i - 1) prod_{j<i} s_j (400 here)."""
        field, jump = 1, 1
        for k, s in zip(self.conv_kernel, self.conv_stride):
            field += (k - 1) * jump
            jump *= s
        return field


def arch_from_config(config) -> Arch:
    """The :class:`Arch` of a transformers ``Wav2Vec2Config`` / ``HubertConfig`` /
    ``WavLMConfig`` / ``Data2VecAudioConfig``."""
    model_type = config.model_type
    if model_type not in PREFIXES:
        raise ValueError(f"model_type {model_type!r} is not a wav2vec 2.0 family model; expected "
                         f"one of {tuple(PREFIXES)}")
    if getattr(config, "adapter_attn_dim", None) is not None:
        raise NotImplementedError(
            f"{model_type}: adapter_attn_dim={config.adapter_attn_dim} (per-layer attention "
            f"adapters, as in MMS checkpoints) is not supported")
    for name in ("hidden_act", "feat_extract_activation"):
        if getattr(config, name) not in ACTIVATIONS:
            raise ValueError(f"{model_type}: {name}={getattr(config, name)!r} is not one of "
                             f"{sorted(ACTIVATIONS)}")
    data2vec = model_type == "data2vec-audio"
    if data2vec:
        pos_conv, pos_kernel, pos_layers = "stack", config.conv_pos_kernel_size, config.num_conv_pos_embeddings
    elif getattr(config, "conv_pos_batch_norm", False):
        pos_conv, pos_kernel, pos_layers = "batch_norm", config.num_conv_pos_embeddings, 1
    else:
        pos_conv, pos_kernel, pos_layers = "weight_norm", config.num_conv_pos_embeddings, 1
    feat_extract_norm = "layer" if data2vec else config.feat_extract_norm
    if feat_extract_norm not in ("group", "layer"):
        raise ValueError(f"{model_type}: feat_extract_norm={feat_extract_norm!r}, expected 'group' or 'layer'")
    return Arch(
        model_type=model_type,
        conv_dim=tuple(int(c) for c in config.conv_dim),
        conv_kernel=tuple(int(k) for k in config.conv_kernel),
        conv_stride=tuple(int(s) for s in config.conv_stride),
        conv_bias=bool(config.conv_bias),
        feat_extract_norm=feat_extract_norm,
        feat_proj_layer_norm=bool(getattr(config, "feat_proj_layer_norm", True)) if model_type == "hubert" else True,
        hidden_size=int(config.hidden_size),
        num_layers=int(config.num_hidden_layers),
        num_heads=int(config.num_attention_heads),
        intermediate_size=int(config.intermediate_size),
        layer_norm_eps=float(config.layer_norm_eps),
        stable_layer_norm=False if data2vec else bool(config.do_stable_layer_norm),
        pos_conv=pos_conv,
        pos_conv_kernel=int(pos_kernel),
        pos_conv_groups=int(config.num_conv_pos_embedding_groups),
        pos_conv_layers=int(pos_layers),
        rel_pos_buckets=int(config.num_buckets) if model_type == "wavlm" else 0,
        rel_pos_max_distance=int(config.max_bucket_distance) if model_type == "wavlm" else 0,
        hidden_act=config.hidden_act,
        feat_extract_activation=config.feat_extract_activation,
    )


# ----------------------------------------------------------------------------- frame counts

def num_frames(arch: Arch, lengths):
    """Real frames per utterance: T_i = floor((T_{i-1} - k_i) / s_i) + 1 per conv layer, >= 0.

    Works on numpy and jax integer arrays (the torch formula of
    ``_get_feat_extract_output_lengths``).
    """
    xp = jnp if isinstance(lengths, jax.Array) else np
    n = lengths
    for k, s in zip(arch.conv_kernel, arch.conv_stride):
        n = (n - k) // s + 1
    return xp.maximum(n, 0)


def _length_mask(n, size: int):
    """[B] counts -> [B, size] bool, True on the first n positions."""
    return jnp.arange(size)[None, :] < n[:, None]


# ----------------------------------------------------------------------------- Flax modules

def layer_norm(arch: Arch, name: str, dtype, eps: float | None = None, affine: bool = True):
    return nn.LayerNorm(epsilon=arch.layer_norm_eps if eps is None else eps, dtype=dtype,
                        use_fast_variance=False, use_bias=affine, use_scale=affine, name=name)


def dense(features: int, name: str, dtype, kernel_init=nn.initializers.normal(0.02)):
    return nn.Dense(features, dtype=dtype, kernel_init=kernel_init, name=name)


def _symmetric_uniform(bound: float):
    """U(-bound, bound), torch's default Linear / Conv1d bias init."""
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)
    return init


def _conv_init(scale: float = 2.0):
    """Kaiming-normal over a [K, C_in, C_out] kernel (torch's Conv1d init in transformers)."""
    return nn.initializers.variance_scaling(scale, "fan_in", "normal", in_axis=(0, 1), out_axis=2)


class StridedConv(nn.Module):
    """Valid 1-D conv with stride: x [B, S, C_in] -> [B, floor((S - k) / s) + 1, C_out].

    kernel [k, C_in, C_out] (torch's Conv1d weight [C_out, C_in, k] transposed). XLA's CPU
    convolution ran the 512-channel stem layers 2.3x faster than an im2col matmul.
    """

    features: int
    kernel_size: int
    stride: int
    use_bias: bool
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        k, c_in = self.kernel_size, x.shape[-1]
        kernel = self.param("kernel", _conv_init(), (k, c_in, self.features), jnp.float32)
        y = lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (self.stride,), "VALID",
                                     dimension_numbers=("NWC", "WIO", "NWC"))
        if self.use_bias:
            bias = self.param("bias", _symmetric_uniform(1.0 / math.sqrt(k * c_in)), (self.features,), jnp.float32)
            y = y + bias.astype(self.dtype)
        return y


class MaskedChannelNorm(nn.Module):
    """GroupNorm with one group per channel, statistics over real frames only.

    x [B, T, C], mask [B, T]: mu_bc = mean_{t real} x_btc, var_bc = mean_{t real}(x - mu)^2
    (biased), y = (x - mu) / sqrt(var + eps) * scale + bias. Equals torch's
    ``GroupNorm(C, C)`` on each utterance alone.
    """

    eps: float = 1e-5
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        x = x.astype(jnp.float32)
        m = mask.astype(jnp.float32)  # [B, T]
        count = jnp.maximum(m.sum(axis=1), 1.0)[:, None, None]
        # Masked sums over time as contractions with the mask: XLA's CPU masked reduce over the
        # [B, 32000, 512] output of conv 0 took 0.57 s of a 0.83 s stem (10 s of audio).
        masked_sum = lambda v: jnp.einsum("bt,btc->bc", m, v, precision=lax.Precision.HIGHEST)[:, None]
        mean = masked_sum(x) / count
        xc = x - mean
        var = masked_sum(jnp.square(xc)) / count
        y = xc * lax.rsqrt(var + self.eps) * scale + bias
        return y.astype(self.dtype)


class FeatureEncoder(nn.Module):
    """Conv stem: waveforms [B, S], lengths [B] -> features [B, T, C], mask [B, T]."""

    arch: Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, waveforms, lengths):
        arch = self.arch
        act = ACTIVATIONS[arch.feat_extract_activation]
        x = waveforms[..., None]
        n = lengths
        for i, (c, k, s) in enumerate(zip(arch.conv_dim, arch.conv_kernel, arch.conv_stride)):
            x = StridedConv(c, k, s, arch.conv_bias, self.dtype, name=f"conv_layers_{i}")(x)
            n = jnp.maximum((n - k) // s + 1, 0)
            if arch.feat_extract_norm == "layer":
                x = layer_norm(arch, f"layer_norm_{i}", self.dtype, eps=1e-5)(x)
            elif i == 0:
                x = MaskedChannelNorm(1e-5, self.dtype, name="layer_norm_0")(x, _length_mask(n, x.shape[1]))
            x = act(x)
        return x, _length_mask(n, x.shape[1])


class PositionalConv(nn.Module):
    """Relative positional embedding by convolution: x [B, T, D] (padded frames zero) -> [B, T, D].

    ``weight_norm``: gelu(conv(x)), grouped conv, kernel K, padding K//2 on both sides and the
    last output dropped for even K (torch's SamePad); the weight-normed kernel
    w = g * v / ||v|| (norm over C_out, C_in/G per tap: weight_norm dim=2) is resolved at load.
    ``batch_norm``: gelu(conv(BN(x))) with BN's running statistics (eval mode).
    ``stack``: data2vec-audio, n x [conv, LayerNorm without affine, gelu].
    """

    arch: Arch
    dtype: Any = jnp.float32

    def _conv(self, x, name: str, k: int):
        d, g = x.shape[-1], self.arch.pos_conv_groups
        std = 2.0 * math.sqrt(1.0 / (k * d // g))
        kernel = self.param(f"{name}_kernel", nn.initializers.normal(std), (k, d // g, d), jnp.float32)
        bias = self.param(f"{name}_bias", nn.initializers.zeros, (d,), jnp.float32)
        pad = (k // 2, k // 2 - (1 - k % 2))
        y = lax.conv_general_dilated(x.astype(self.dtype), kernel.astype(self.dtype), (1,), [pad],
                                     dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=g)
        return y + bias.astype(self.dtype)

    @nn.compact
    def __call__(self, x, mask):
        arch = self.arch
        act = ACTIVATIONS[arch.feat_extract_activation]
        m = mask[..., None].astype(x.dtype)
        if arch.pos_conv == "stack":
            for j in range(arch.pos_conv_layers):
                x = self._conv(x * m, f"conv_{j}", arch.pos_conv_kernel)
                x = act(layer_norm(arch, f"layer_norm_{j}", self.dtype, eps=1e-5, affine=False)(x))
            return x
        if arch.pos_conv == "batch_norm":
            d = x.shape[-1]
            p = {name: self.param(f"batch_norm_{name}", init, (d,), jnp.float32)
                 for name, init in (("scale", nn.initializers.ones), ("bias", nn.initializers.zeros),
                                    ("mean", nn.initializers.zeros), ("var", nn.initializers.ones))}
            x = ((x.astype(jnp.float32) - p["mean"]) * lax.rsqrt(p["var"] + 1e-5) * p["scale"]
                 + p["bias"]).astype(self.dtype) * m
        return act(self._conv(x, "conv", arch.pos_conv_kernel))


def relative_position_buckets(num_frames_: int, num_buckets: int, max_distance: int) -> np.ndarray:
    """WavLM's bucket of key j relative to query i, [T, T] int (transformers' float32 math).

    Half the buckets for j > i; |j - i| < num_buckets / 4 exact, larger distances
    log-spaced up to ``max_distance``.
    """
    pos = np.arange(num_frames_)
    rel = pos[None, :] - pos[:, None]
    half = num_buckets // 2
    buckets = (rel > 0).astype(np.int64) * half
    rel = np.abs(rel)
    max_exact = half // 2
    large = np.log(np.maximum(rel, 1).astype(np.float32) / np.float32(max_exact))  # used where rel >= max_exact
    large = large / np.float32(math.log(max_distance / max_exact)) * np.float32(half - max_exact)
    large = np.minimum((np.float32(max_exact) + large).astype(np.int64), half - 1)
    return buckets + np.where(rel < max_exact, rel, large)


class Attention(nn.Module):
    """Multi-head self-attention with a key mask and, for WavLM, a gated relative position bias.

    x [B, T, D], key_mask [B, T] bool, position_bias [H, T, T] or None.
    WavLM gate (per query and head, from that head's slice x_h of the layer input):
    (a, b) = sigmoid(sum over 4 of reshape(W x_h + c, [2, 4])), gate = a * (b * const - 1) + 2,
    logits += gate * position_bias.
    """

    arch: Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, key_mask, position_bias):
        arch = self.arch
        b, t, d = x.shape
        h, hd = arch.num_heads, arch.head_dim
        q = split_heads(dense(d, "q_proj", self.dtype)(x), h)  # [B, H, T, hd]
        k = split_heads(dense(d, "k_proj", self.dtype)(x), h)
        v = split_heads(dense(d, "v_proj", self.dtype)(x), h)
        logits = ((q * hd**-0.5) @ k.transpose(0, 1, 3, 2)).astype(jnp.float32)  # [B, H, T, T]
        if arch.rel_pos_buckets:
            gates = dense(8, "gru_rel_pos_linear", self.dtype)(x.reshape(b, t, h, hd))
            gates = jax.nn.sigmoid(gates.astype(jnp.float32).reshape(b, t, h, 2, 4).sum(-1))
            const = self.param("gru_rel_pos_const", nn.initializers.ones, (h,), jnp.float32)
            gate = gates[..., 0] * (gates[..., 1] * const - 1.0) + 2.0  # [B, T, H]
            logits = logits + gate.transpose(0, 2, 1)[..., None] * position_bias[None]
        # key_mask [B, T] (keys) or [B, T, T] (query x key, e.g. causal)
        allowed = key_mask[:, None, None, :] if key_mask.ndim == 2 else key_mask[:, None]
        logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
        weights = jax.nn.softmax(logits, axis=-1).astype(self.dtype)
        out = merge_heads(weights @ v)
        return dense(d, "out_proj", self.dtype)(out)


class FeedForward(nn.Module):
    arch: Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        x = dense(self.arch.intermediate_size, "intermediate_dense", self.dtype)(x)
        x = ACTIVATIONS[self.arch.hidden_act](x)
        return dense(self.arch.hidden_size, "output_dense", self.dtype)(x)


class EncoderLayer(nn.Module):
    """One transformer layer; (carry, key_mask, position_bias) -> (carry, carry) for nn.scan.

    post-LN: x = LN(x + Att(x)); x = LN(x + FF(x)).
    pre-LN ("stable layer norm"): x = x + Att(LN(x)); x = x + FF(LN(x)).
    ``dropout`` > 0 (training only): each branch's output, Att(.) and FF(.), is dropped at that
    rate before it joins the residual stream (Vaswani et al.'s residual dropout); it draws from
    the ``"dropout"`` rng. 0 (the default, and every loaded encoder) adds nothing.
    """

    arch: Arch
    dtype: Any = jnp.float32
    dropout: float = 0.0

    @nn.compact
    def __call__(self, x, key_mask, position_bias):
        arch, dt = self.arch, self.dtype
        attention = Attention(arch, dt, name="attention")
        feed_forward = FeedForward(arch, dt, name="feed_forward")
        norm1, norm2 = layer_norm(arch, "layer_norm", dt), layer_norm(arch, "final_layer_norm", dt)
        drop = (lambda y: nn.Dropout(self.dropout, deterministic=False)(y)) if self.dropout else (lambda y: y)
        if arch.stable_layer_norm:
            x = x + drop(attention(norm1(x), key_mask, position_bias))
            x = x + drop(feed_forward(norm2(x)))
        else:
            x = norm1(x + drop(attention(x, key_mask, position_bias)))
            x = norm2(x + drop(feed_forward(x)))
        return x, x


class TransformerEncoder(nn.Module):
    """Positional conv + L layers: x [B, T, D], mask [B, T] -> hidden states [L + 1, B, T, D]."""

    arch: Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, mask):
        arch = self.arch
        x = x * mask[..., None].astype(x.dtype)
        x = x + PositionalConv(arch, self.dtype, name="pos_conv_embed")(x, mask)
        final_norm = layer_norm(arch, "layer_norm", self.dtype)
        if not arch.stable_layer_norm:
            x = final_norm(x)
        position_bias = None
        if arch.rel_pos_buckets:
            table = self.param("rel_attn_embed", nn.initializers.normal(0.02),
                               (arch.rel_pos_buckets, arch.num_heads), jnp.float32)
            buckets = relative_position_buckets(x.shape[1], arch.rel_pos_buckets, arch.rel_pos_max_distance)
            position_bias = jnp.take(table, jnp.asarray(buckets), axis=0).transpose(2, 0, 1)  # [H, T, T]
        layers = nn.scan(EncoderLayer, variable_axes={"params": 0}, split_rngs={"params": True},
                         in_axes=(nn.broadcast, nn.broadcast), length=arch.num_layers)
        last, states = layers(arch, self.dtype, name="layers")(x, mask, position_bias)
        if arch.stable_layer_norm:
            states = states.at[-1].set(final_norm(last))
        return jnp.concatenate([x[None].astype(states.dtype), states], axis=0)


class Wav2Vec2Family(nn.Module):
    """The whole backbone: waveforms [B, S] float, lengths [B] int -> :class:`EncoderOutput`."""

    arch: Arch
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, waveforms, lengths, time_mask=None, mask_embedding=None):
        """``time_mask`` [B, T] bool / ``mask_embedding`` [D] (masked pretraining only): the
        feature projection's output at masked frames is replaced by the embedding."""
        arch = self.arch
        if waveforms.shape[1] < arch.receptive_field:
            raise ValueError(f"{arch.model_type}: waveforms have {waveforms.shape[1]} samples, fewer "
                             f"than one frame's receptive field ({arch.receptive_field})")
        lengths = jnp.minimum(lengths.astype(jnp.int32), waveforms.shape[1])
        feats, mask = FeatureEncoder(arch, self.dtype, name="feature_extractor")(waveforms, lengths)
        if arch.feat_proj_layer_norm:
            feats = layer_norm(arch, "feature_projection_layer_norm", self.dtype)(feats)
        bound = 1.0 / math.sqrt(feats.shape[-1])
        x = nn.Dense(arch.hidden_size, dtype=self.dtype, name="feature_projection",
                     kernel_init=_symmetric_uniform(bound), bias_init=_symmetric_uniform(bound))(feats)
        if time_mask is not None:
            x = jnp.where(time_mask[..., None], mask_embedding.astype(x.dtype), x)
        # Padded frames are left as computed (not zeroed): a mask multiply on the stacked
        # output made XLA's CPU compile of the base model take minutes instead of seconds.
        hidden = TransformerEncoder(arch, self.dtype, name="encoder")(x, mask)
        return EncoderOutput(hidden_states=hidden, mask=mask)


# ----------------------------------------------------------------------------- checkpoint conversion

def torch_linear(w):
    return w.T  # torch Linear [out, in] -> Flax Dense [in, out]


def torch_conv(w):
    return w.transpose(2, 1, 0)  # torch Conv1d [C_out, C_in, K] -> [K, C_in, C_out]


def _same(w):
    return w


def weight_norm(g: np.ndarray, v: np.ndarray, dim: int = 2) -> np.ndarray:
    """torch ``weight_norm(dim)``: w = g * v / ||v||, the norm over every axis but ``dim``."""
    axes = tuple(a for a in range(v.ndim) if a != dim)
    v64 = v.astype(np.float64)
    return (g.astype(np.float64) * v64 / np.sqrt(np.sum(v64**2, axis=axes, keepdims=True))).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class ParamEntry:
    """Flax leaf ``path`` (stacked over layers when ``layer`` is set) <- fn(*torch tensors)."""

    path: tuple[str, ...]
    sources: tuple[tuple[str, tuple[int, ...]], ...]  # (torch key, torch shape)
    fn: Any = _same
    layer: int | None = None


# Keys inside the backbone that the forward pass does not use.
_UNUSED_BACKBONE_KEYS = ("encoder.pos_conv_embed.batch_norm.num_batches_tracked",)
_WEIGHT_NORM_SPELLINGS = {
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}


def param_entries(arch: Arch) -> list[ParamEntry]:
    """Every Flax parameter and the PyTorch state-dict keys (transformers 5 names) it comes from."""
    d, ff, h, hd = arch.hidden_size, arch.intermediate_size, arch.num_heads, arch.head_dim
    out: list[ParamEntry] = []

    def add(path, key, shape, fn=_same, layer=None):
        out.append(ParamEntry(tuple(path), ((key, tuple(shape)),), fn, layer))

    def add_norm(path, key, n, layer=None):
        add(path + ("scale",), key + ".weight", (n,), layer=layer)
        add(path + ("bias",), key + ".bias", (n,), layer=layer)

    def add_linear(path, key, n_in, n_out, layer=None):
        add(path + ("kernel",), key + ".weight", (n_out, n_in), torch_linear, layer)
        add(path + ("bias",), key + ".bias", (n_out,), layer=layer)

    fe = ("feature_extractor",)
    for i, (c, k) in enumerate(zip(arch.conv_dim, arch.conv_kernel)):
        c_in = arch.conv_dim[i - 1] if i else 1
        key = f"feature_extractor.conv_layers.{i}"
        add(fe + (f"conv_layers_{i}", "kernel"), key + ".conv.weight", (c, c_in, k), torch_conv)
        if arch.conv_bias:
            add(fe + (f"conv_layers_{i}", "bias"), key + ".conv.bias", (c,))
        if arch.feat_extract_norm == "layer" or i == 0:
            add_norm(fe + (f"layer_norm_{i}",), key + ".layer_norm", c)
    c = arch.conv_dim[-1]
    if arch.feat_proj_layer_norm:
        add_norm(("feature_projection_layer_norm",), "feature_projection.layer_norm", c)
    add_linear(("feature_projection",), "feature_projection.projection", c, d)

    pc, k, g = ("encoder", "pos_conv_embed"), arch.pos_conv_kernel, arch.pos_conv_groups
    if arch.pos_conv == "stack":
        for j in range(arch.pos_conv_layers):
            key = f"encoder.pos_conv_embed.layers.{j}.conv"
            add(pc + (f"conv_{j}_kernel",), key + ".weight", (d, d // g, k), torch_conv)
            add(pc + (f"conv_{j}_bias",), key + ".bias", (d,))
    else:
        if arch.pos_conv == "weight_norm":
            out.append(ParamEntry(pc + ("conv_kernel",), (
                ("encoder.pos_conv_embed.conv.parametrizations.weight.original0", (1, 1, k)),
                ("encoder.pos_conv_embed.conv.parametrizations.weight.original1", (d, d // g, k))),
                lambda g_, v_: torch_conv(weight_norm(g_, v_, dim=2))))
        else:
            add(pc + ("conv_kernel",), "encoder.pos_conv_embed.conv.weight", (d, d // g, k),
                torch_conv)
            for name, torch_name in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"),
                                     ("var", "running_var")):
                add(pc + (f"batch_norm_{name}",), f"encoder.pos_conv_embed.batch_norm.{torch_name}", (d,))
        add(pc + ("conv_bias",), "encoder.pos_conv_embed.conv.bias", (d,))
    add_norm(("encoder", "layer_norm"), "encoder.layer_norm", d)
    if arch.rel_pos_buckets:
        add(("encoder", "rel_attn_embed"), "encoder.layers.0.attention.rel_attn_embed.weight",
            (arch.rel_pos_buckets, h))

    for l in range(arch.num_layers):
        key, path = f"encoder.layers.{l}", ("encoder", "layers")
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            add_linear(path + ("attention", name), f"{key}.attention.{name}", d, d, l)
        if arch.rel_pos_buckets:
            add_linear(path + ("attention", "gru_rel_pos_linear"), f"{key}.attention.gru_rel_pos_linear", hd, 8, l)
            add(path + ("attention", "gru_rel_pos_const"), f"{key}.attention.gru_rel_pos_const", (1, h, 1, 1),
                lambda x: x.reshape(-1), l)
        add_norm(path + ("layer_norm",), f"{key}.layer_norm", d, l)
        add_linear(path + ("feed_forward", "intermediate_dense"), f"{key}.feed_forward.intermediate_dense", d, ff, l)
        add_linear(path + ("feed_forward", "output_dense"), f"{key}.feed_forward.output_dense", ff, d, l)
        add_norm(path + ("final_layer_norm",), f"{key}.final_layer_norm", d, l)
    return out


def expected_state_dict_shapes(arch: Arch) -> dict[str, tuple[int, ...]]:
    """Backbone state-dict keys (no task prefix, weight norm as ``parametrizations``) -> shapes."""
    return {key: shape for e in param_entries(arch) for key, shape in e.sources}


def split_state_dict(state: Mapping[str, np.ndarray], arch: Arch) -> tuple[dict[str, np.ndarray], list[str]]:
    """(backbone tensors under canonical names, dropped keys).

    Strips the task-model prefix (``wav2vec2.``, ``hubert.``, ``wavlm.``, ``data2vec_audio.``),
    renames the old weight-norm spelling ``weight_g``/``weight_v`` to
    ``parametrizations.weight.original0/1``, and drops everything outside the backbone:
    CTC/classification heads, quantizer, ``project_q``/``project_hid``, ``masked_spec_embed``,
    HuBERT label embeddings, the post-encoder adapter.
    """
    prefix = PREFIXES[arch.model_type] + "."
    backbone, dropped = {}, []
    for key, value in state.items():
        name = key[len(prefix):] if key.startswith(prefix) else key
        name = _WEIGHT_NORM_SPELLINGS.get(name, name)
        if name.startswith(BACKBONE_ROOTS) and name not in _UNUSED_BACKBONE_KEYS:
            if name in backbone:
                raise checkpoint.CheckpointError(f"key {name!r} appears twice (with and without {prefix!r})")
            backbone[name] = value
        else:
            dropped.append(key)
    return backbone, sorted(dropped)


def params_from_state_dict(state: Mapping[str, np.ndarray], arch: Arch, source: str = "<state dict>"):
    """Flax parameters of :class:`Wav2Vec2Family` from a transformers PyTorch state dict.

    Raises :class:`checkpoint.CheckpointError` naming every missing, unexpected or misshaped key.
    """
    backbone, dropped = split_state_dict(state, arch)
    dropped = [k for k in dropped if not k.endswith("masked_spec_embed")]  # the masking hook's
    if dropped:
        logger.warning("%s: dropped %d tensors that are not part of the %s encoder: %s", source,
                       len(dropped), arch.model_type, ", ".join(dropped))
    entries = param_entries(arch)
    checkpoint.check_state_dict(expected_state_dict_shapes(arch), backbone, source)
    params: dict = {}
    stacked: dict[tuple[str, ...], list] = {}
    for e in entries:
        value = np.asarray(e.fn(*(backbone[key] for key, _ in e.sources)), dtype=np.float32)
        if e.layer is None:
            set_path(params, e.path, value)
        else:
            stacked.setdefault(e.path, [None] * arch.num_layers)[e.layer] = value
    for path, values in stacked.items():
        set_path(params, path, np.stack(values))
    _check_tree(params, arch, source)
    return params


def set_path(tree: dict, path: tuple[str, ...], value) -> None:
    for name in path[:-1]:
        tree = tree.setdefault(name, {})
    tree[path[-1]] = value


def _check_tree(params, arch: Arch, source) -> None:
    """The converted tree must have exactly the module's parameter shapes."""
    want = jax.eval_shape(lambda: init_params(arch, jax.random.PRNGKey(0)))
    flat_want = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(want)}
    flat_got = {jax.tree_util.keystr(p): v.shape for p, v in jax.tree_util.tree_leaves_with_path(params)}
    if flat_want != flat_got:
        diff = sorted(set(flat_want.items()) ^ set(flat_got.items()))
        raise AssertionError(f"{source}: converted parameters differ from the module's: {diff[:10]}")


def init_params(arch: Arch, rng, dtype=jnp.float32):
    """Random parameters (transformers-style init: N(0, 0.02) linears, Kaiming convs)."""
    n = arch.receptive_field
    return Wav2Vec2Family(arch, dtype).init(rng, jnp.zeros((1, n), jnp.float32),
                                            jnp.full((1,), n, jnp.int32))["params"]


_init_params_jit = jax.jit(init_params, static_argnums=0)


# ----------------------------------------------------------------------------- loaders

@functools.lru_cache(maxsize=None)
def apply_fns(arch: Arch, dtype=jnp.float32):
    """The pure (apply_fn, masked_apply_fn) of an architecture: one pair per (arch, dtype), so
    that every encoder of that architecture (checkpoints, random-init controls) shares their
    compiled executables (``Encoder`` jits them)."""
    model = Wav2Vec2Family(arch, dtype)

    def apply_fn(params, waveforms, lengths) -> EncoderOutput:
        return model.apply({"params": params}, waveforms, lengths)

    def masked_apply_fn(params, mask_params, waveforms, lengths, frame_mask) -> EncoderOutput:
        return model.apply({"params": params}, waveforms, lengths, frame_mask,
                           mask_params["masked_spec_embed"])

    return apply_fn, masked_apply_fn


def make_encoder(arch: Arch, params, *, name: str, dtype=jnp.float32, config=None,
                 mask_embedding=None) -> Encoder:
    """An :class:`Encoder` around :class:`Wav2Vec2Family` with these parameters.

    ``mask_embedding`` [D] (the checkpoint's ``masked_spec_embed``) gives it the masking hook
    (``Encoder.apply_masked``: the embedding replaces the feature projection's output at masked
    frames, as transformers' ``mask_time_indices``); without it the hook is absent."""
    apply_fn, masked_apply_fn = apply_fns(arch, dtype)
    mask_params = None
    if mask_embedding is not None:
        emb = np.asarray(mask_embedding, np.float32)
        if emb.shape != (arch.hidden_size,):
            raise checkpoint.CheckpointError(f"{name}: masked_spec_embed has shape {emb.shape}, "
                                             f"expected ({arch.hidden_size},)")
        mask_params = {"masked_spec_embed": jnp.asarray(emb)}

    return Encoder(
        name=name,
        apply_fn=apply_fn,
        params=jax.tree.map(jnp.asarray, params),
        num_layers=arch.num_layers,
        hidden_size=arch.hidden_size,
        sample_rate=SAMPLE_RATE,
        frame_rate=SAMPLE_RATE / arch.hop,
        frame_offset_s=arch.receptive_field / 2 / SAMPLE_RATE,
        num_frames_fn=functools.partial(num_frames, arch),
        config=config,
        dtype=dtype,
        masked_apply_fn=masked_apply_fn if mask_params is not None else None,
        mask_params=mask_params,
    )


def mask_embedding_from_state_dict(state: Mapping[str, np.ndarray], arch: Arch):
    """The checkpoint's ``masked_spec_embed`` [D] (with or without the task-model prefix), or
    None when it has none (a checkpoint trained without masking)."""
    for key in ("masked_spec_embed", f"{PREFIXES[arch.model_type]}.masked_spec_embed"):
        if key in state:
            return np.asarray(state[key], np.float32)
    return None


def load_wav2vec2_family(path, *, dtype=jnp.float32, allow_pickle: bool = False) -> Encoder:
    """Loads a Hugging Face wav2vec2 / hubert / wavlm / data2vec-audio directory.

    Reads ``config.json`` with transformers' ``AutoConfig`` and the weights with
    :func:`checkpoint.read_state_dict` (``model.safetensors``; ``pytorch_model.bin`` only with
    ``allow_pickle=True``). Task heads are dropped (logged); a missing, unexpected or misshaped
    backbone key raises :class:`checkpoint.CheckpointError`.
    """
    from transformers import AutoConfig

    path = Path(path)
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path}: no config.json")
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    arch = arch_from_config(config)
    if getattr(config, "add_adapter", False):
        logger.warning("%s: add_adapter=True; the adapter after the encoder is not part of the hidden "
                       "states and is dropped", path)
    state = checkpoint.read_state_dict(path, allow_pickle=allow_pickle)
    params = params_from_state_dict(state, arch, source=str(path))
    return make_encoder(arch, params, name=str(path), dtype=dtype, config=config,
                        mask_embedding=mask_embedding_from_state_dict(state, arch))


_LARGE = dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)
_LARGE_PRE_LN = dict(_LARGE, feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)
RANDOM_ARCHS = {
    "wav2vec2-base": ("Wav2Vec2Config", {}),
    "wav2vec2-large": ("Wav2Vec2Config", _LARGE_PRE_LN),  # lv60 style
    "hubert-base": ("HubertConfig", {}),
    "hubert-large": ("HubertConfig", dict(_LARGE_PRE_LN, feat_proj_layer_norm=True)),
    "wavlm-base": ("WavLMConfig", {}),
    "wavlm-large": ("WavLMConfig", _LARGE_PRE_LN),
    "data2vec-audio-base": ("Data2VecAudioConfig", {}),
    "data2vec-audio-large": ("Data2VecAudioConfig", _LARGE),
}


def random_config(arch_name: str):
    """The transformers config of a named architecture (no download)."""
    if arch_name not in RANDOM_ARCHS:
        raise ValueError(f"unknown architecture {arch_name!r}; expected one of {sorted(RANDOM_ARCHS)}")
    import transformers

    cls_name, overrides = RANDOM_ARCHS[arch_name]
    return getattr(transformers, cls_name)(**overrides)


def random_wav2vec2_family(arch: str, *, seed: int = 0, dtype=jnp.float32) -> Encoder:
    """A randomly initialised encoder (the random-init control), e.g. ``hubert-base``."""
    config = random_config(arch)
    a = arch_from_config(config)
    params = _init_params_jit(a, jax.random.PRNGKey(seed))  # one compilation per arch, any seed
    # masked_spec_embed ~ U[0, 1) as transformers initialises it
    emb = jax.random.uniform(jax.random.fold_in(jax.random.PRNGKey(seed), 1), (a.hidden_size,))
    return make_encoder(a, params, name=f"random:{arch}@{seed}", dtype=dtype, config=config,
                        mask_embedding=emb)
