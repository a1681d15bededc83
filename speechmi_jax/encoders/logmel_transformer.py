"""The zoo's controlled backbone: a transformer over stacked log-mel, causal or bidirectional.

One architecture for every self-supervised family the package trains (MelHuBERT-style, Lin et
al. 2022: no waveform conv stem), so that models differ only in their objective:

  waveforms [B, S] -> Whisper-style log-mel [B, T100, 80] at 100 Hz (``audio_features``)
    -> ``stack`` consecutive frames concatenated -> [B, T, stack * 80] at 100 / stack Hz
    -> Linear -> D  (masked pretraining: a learned embedding replaces masked frames here)
    -> + gelu(grouped positional conv, kernel K; left-padded when causal, centred otherwise)
    = hidden_states[0]
    -> L pre-LN transformer layers (``causal``: frame t attends to real frames <= t)
    -> hidden_states[1..L], the last after the final LayerNorm.

``causal=True`` is APC's context network (Chung et al. 2019): frame t of every hidden state
depends on log-mel frames of stacked frames <= t only (the log-mel's 80 dB floor is relative to
the utterance's loudest bin, its one utterance-level statistic). ``causal=False`` is the
bidirectional encoder of HuBERT-style masked prediction and data2vec.

Frames: stacked frame i covers 100 Hz frames i*s .. i*s + s - 1 and is centred at
(i*s + (s - 1) / 2) * 10 ms; an utterance of n samples has ceil(ceil(n / 160) / s) real frames.
Padding never changes a real frame: log-mel frames past the utterance are zeroed before
stacking, padded frames are zeroed before the positional conv and masked as attention keys.

Masking hook (``Encoder.apply_masked``): a model trained with a mask embedding
(``masked_spec_embed`` [D], the masked families) puts it at masked frames after the input
projection, as it was trained; one without (APC) sets the log-mel frames under a masked frame to
``audio_features.MASKED_LOG10_MEL``.

Saved as ``config.json`` (``model_type: speechmi-logmel-transformer``) + ``model.safetensors``
(keys: '/'-joined Flax parameter paths; ``masked_spec_embed`` when present). Directories of the
earlier causal-only format (``model_type: speechmi-causal-logmel``: 100 Hz, causal) load as
``stack=1, causal=True``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from speechmi_jax.encoders import audio_features as af
from speechmi_jax.encoders import checkpoint
from speechmi_jax.encoders import wav2vec2 as w2v
from speechmi_jax.encoders.base import Encoder, EncoderOutput

MODEL_TYPE = "speechmi-logmel-transformer"
LEGACY_CAUSAL_MODEL_TYPE = "speechmi-causal-logmel"  # 100 Hz, causal only
MODEL_TYPES = (MODEL_TYPE, LEGACY_CAUSAL_MODEL_TYPE)
MASK_EMBEDDING = "masked_spec_embed"


@dataclasses.dataclass(frozen=True)
class MelArch:
    """Every switch of :class:`LogMelTransformer` (its config.json, less ``model_type``)."""

    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    intermediate_size: int = 512
    causal: bool = True
    stack: int = 2  # log-mel frames per model frame: 1 -> 100 Hz, 2 -> 50 Hz
    pos_conv_kernel: int = 8
    pos_conv_groups: int = 4
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        for key in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "stack",
                    "pos_conv_kernel", "pos_conv_groups"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"log-mel transformer {key}={getattr(self, key)!r}: expected a "
                                 f"positive integer")
        for key, by in (("num_heads", "hidden_size"), ("pos_conv_groups", "hidden_size")):
            if self.hidden_size % getattr(self, key):
                raise ValueError(f"log-mel transformer {key}={getattr(self, key)} must divide "
                                 f"hidden_size={self.hidden_size}")
        if self.hidden_act not in w2v.ACTIVATIONS:
            raise ValueError(f"log-mel transformer hidden_act={self.hidden_act!r}: expected one of "
                             f"{sorted(w2v.ACTIVATIONS)}")

    @property
    def input_size(self) -> int:
        return self.stack * af.N_MELS

    @property
    def hop(self) -> int:
        """Samples per model frame."""
        return af.HOP * self.stack

    @property
    def frame_rate(self) -> float:
        return af.SAMPLE_RATE / self.hop

    @property
    def frame_offset_s(self) -> float:
        return (self.stack - 1) / 2 * af.HOP / af.SAMPLE_RATE

    def num_frames(self, lengths):
        """Real model frames per utterance of ``lengths`` samples (numpy or jax ints)."""
        n100 = -(-lengths // af.HOP)
        return -(-n100 // self.stack)

    @property
    def layers(self) -> w2v.Arch:
        """The transformer layers' switches (pre-LN, no relative position bias)."""
        return w2v.Arch(model_type=MODEL_TYPE, conv_dim=(), conv_kernel=(), conv_stride=(),
                        conv_bias=False, feat_extract_norm="layer", feat_proj_layer_norm=False,
                        hidden_size=self.hidden_size, num_layers=self.num_layers,
                        num_heads=self.num_heads, intermediate_size=self.intermediate_size,
                        layer_norm_eps=self.layer_norm_eps, stable_layer_norm=True,
                        pos_conv="none", pos_conv_kernel=self.pos_conv_kernel,
                        pos_conv_groups=self.pos_conv_groups, pos_conv_layers=1, rel_pos_buckets=0,
                        rel_pos_max_distance=0, hidden_act=self.hidden_act,
                        feat_extract_activation=self.hidden_act)

    def config(self) -> dict:
        return {"model_type": MODEL_TYPE, **dataclasses.asdict(self)}


def _conv1d(x, kernel, pad: tuple[int, int], groups: int):
    return lax.conv_general_dilated(x, kernel, (1,), [pad], dimension_numbers=("NWC", "WIO", "NWC"),
                                    feature_group_count=groups)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def grouped_conv1d(x, kernel, pad: tuple[int, int], groups: int):
    """x [B, T, D], kernel [K, D / groups, D] (width, in, out; output channel g * D / groups + o
    belongs to group g) -> [B, T + pad[0] + pad[1] - K + 1, D]: ``lax.conv_general_dilated``
    with ``feature_group_count=groups``, ``pad`` zero frames before and after.

    Its kernel gradient is computed as one [D/groups, groups, D/groups] matmul per tap over the
    B x T frames: XLA's CPU backward of a grouped convolution w.r.t. its kernel took 52 ms
    against 5 ms for the zoo recipe's positional conv (16 x 100 x 256, kernel 16, 16 groups),
    a tenth of a pretraining step (BENCHMARKS.md, "Pretraining")."""
    return _conv1d(x, kernel, pad, groups)


def _grouped_conv1d_fwd(x, kernel, pad, groups):
    return _conv1d(x, kernel, pad, groups), (x, kernel)


def _grouped_conv1d_bwd(pad, groups, res, dy):
    x, kernel = res
    (b, t_out, d), (k, c, _) = dy.shape, kernel.shape
    dx = jax.vjp(lambda v: _conv1d(v, kernel, pad, groups), x)[1](dy)[0]
    xp = jnp.pad(x, ((0, 0), pad, (0, 0))).reshape(b, -1, groups, c)        # [B, T + K - 1, G, c]
    dyg = dy.reshape(b * t_out, groups, d // groups)                          # [N, G, o]
    taps = [jnp.einsum("ngc,ngo->cgo", xp[:, j:j + t_out].reshape(b * t_out, groups, c), dyg)
            for j in range(k)]                                                # K x [c, G, o]
    return dx, jnp.stack(taps).reshape(k, c, d).astype(kernel.dtype)


grouped_conv1d.defvjp(_grouped_conv1d_fwd, _grouped_conv1d_bwd)


def arch_from_config(config: dict, source: str = "<config>") -> MelArch:
    """config.json -> :class:`MelArch` (the legacy causal format as ``stack=1, causal=True``)."""
    cfg = dict(config)
    model_type = cfg.pop("model_type", None)
    if model_type == LEGACY_CAUSAL_MODEL_TYPE:
        cfg.update(causal=True, stack=1)
    elif model_type != MODEL_TYPE:
        raise ValueError(f"{source}: model_type {model_type!r}; expected one of {MODEL_TYPES}")
    fields = {f.name for f in dataclasses.fields(MelArch)}
    unknown = sorted(set(cfg) - fields)
    if unknown:
        raise ValueError(f"{source}: unknown log-mel transformer keys {unknown}; expected "
                         f"{sorted(fields)}")
    return MelArch(**cfg)


def stacked_log_mel(waveforms, lengths, stack: int, frame_mask=None):
    """Log-mel frames stacked in groups of ``stack``: (features [B, T, stack * 80], mask [B, T]).

    ``frame_mask`` [B, T] bool (model frames): the log-mel frames they cover are set to
    ``audio_features.MASKED_LOG10_MEL``. Log-mel frames past an utterance are zero.
    """
    b, s = waveforms.shape
    t100 = -(-s // af.HOP)
    t = -(-t100 // stack)
    mask100 = None if frame_mask is None else jnp.repeat(frame_mask, stack, axis=1)[:, :t100]
    logmel = af.whisper_log_mel(waveforms, lengths, frame_mask=mask100)  # [B, T100, 80]
    real100 = af.frame_mask(lengths, t100)
    logmel = jnp.where(real100[..., None], logmel, 0.0)
    logmel = jnp.pad(logmel, ((0, 0), (0, t * stack - t100), (0, 0)))
    n = -(-(-(-lengths // af.HOP)) // stack)  # ceil(ceil(n / 160) / stack)
    return logmel.reshape(b, t, stack * af.N_MELS), jnp.arange(t)[None, :] < n[:, None]


class LogMelTransformer(nn.Module):
    """(waveforms [B, S], lengths [B], time_mask [B, T] or None, mask_embedding [D] or None)
    -> EncoderOutput (and the stacked log-mel [B, T, stack * 80] with ``return_inputs``).

    ``dropout`` > 0 is training's regularizer, not part of the architecture (never saved): the
    transformer's input (projection + positional conv) and each layer's attention and
    feed-forward outputs are dropped at that rate (``w2v.EncoderLayer``), drawing from the
    ``"dropout"`` rng. Dropout never crosses frames, so a causal model stays causal."""

    arch: MelArch
    dtype: Any = jnp.float32
    return_inputs: bool = False
    dropout: float = 0.0

    @nn.compact
    def __call__(self, waveforms, lengths, time_mask=None, mask_embedding=None):
        arch, layers = self.arch, self.arch.layers
        lengths = jnp.minimum(lengths.astype(jnp.int32), waveforms.shape[1])
        logmel_mask = time_mask if mask_embedding is None else None
        feats, mask = stacked_log_mel(waveforms, lengths, arch.stack, logmel_mask)
        x = w2v.dense(arch.hidden_size, "input_projection", self.dtype)(feats)
        if time_mask is not None and mask_embedding is not None:
            x = jnp.where(time_mask[..., None], mask_embedding.astype(x.dtype), x)
        x = x * mask[..., None].astype(x.dtype)
        k, g, d = arch.pos_conv_kernel, arch.pos_conv_groups, arch.hidden_size
        kernel = self.param("pos_conv_kernel", nn.initializers.normal(2.0 * math.sqrt(1.0 / (k * d // g))),
                            (k, d // g, d), jnp.float32)
        pad = (k - 1, 0) if arch.causal else (k // 2, k - 1 - k // 2)
        pos = grouped_conv1d(x.astype(self.dtype), kernel.astype(self.dtype), pad, g)
        x = x + w2v.ACTIVATIONS[arch.hidden_act](pos + self.param("pos_conv_bias", nn.initializers.zeros, (d,)))
        if self.dropout:
            x = nn.Dropout(self.dropout, deterministic=False)(x)
        t = x.shape[1]
        attend = mask[:, None, :]  # [B, 1 or T (query), T (key)]
        if arch.causal:
            attend = jnp.tril(jnp.ones((t, t), bool))[None] & attend
        else:
            attend = jnp.broadcast_to(attend, (x.shape[0], t, t))
        # One parameter tree for all layers (stacked), traced once, emitted unrolled: XLA's CPU
        # backward of the rolled loop (per-layer slices of the stacked weights and residuals) made
        # the zoo recipe's backbone forward + backward 417 ms against 296 ms unrolled, with the
        # forward unchanged (94 / 88 ms; BENCHMARKS.md, "Pretraining").
        scanned = nn.scan(w2v.EncoderLayer, variable_axes={"params": 0},
                          split_rngs={"params": True, "dropout": True},
                          in_axes=(nn.broadcast, nn.broadcast), length=arch.num_layers,
                          unroll=arch.num_layers)
        last, states = scanned(layers, self.dtype, self.dropout, name="layers")(x, attend, None)
        states = states.at[-1].set(w2v.layer_norm(layers, "layer_norm", self.dtype)(last))
        out = EncoderOutput(hidden_states=jnp.concatenate([x[None].astype(states.dtype), states], 0),
                            mask=mask)
        return (out, feats) if self.return_inputs else out


def init_params(arch: MelArch, rng):
    n = 4 * arch.hop
    return LogMelTransformer(arch).init(rng, jnp.zeros((1, n), jnp.float32),
                                        jnp.full((1,), n, jnp.int32))["params"]


@functools.lru_cache(maxsize=None)
def apply_fns(arch: MelArch, dtype=jnp.float32):
    """The pure (apply_fn, masked_apply_fn) of an architecture: one pair per (arch, dtype), so
    that every encoder of that architecture (a model and its initialisation, checkpoints of
    one run) shares their compiled executables (``Encoder`` jits them)."""
    model = LogMelTransformer(arch, dtype)

    def apply_fn(params, waveforms, lengths) -> EncoderOutput:
        return model.apply({"params": params}, waveforms, lengths)

    def masked_apply_fn(params, mask_params, waveforms, lengths, frame_mask) -> EncoderOutput:
        emb = None if mask_params is None else mask_params[MASK_EMBEDDING]
        return model.apply({"params": params}, waveforms, lengths, frame_mask, emb)

    return apply_fn, masked_apply_fn


def make_encoder(arch: MelArch, params, *, name: str, mask_embedding=None,
                 dtype=jnp.float32) -> Encoder:
    """An :class:`Encoder` around :class:`LogMelTransformer` (module docstring: frames, masking)."""
    apply_fn, masked_apply_fn = apply_fns(arch, dtype)
    mask_params = None if mask_embedding is None else {MASK_EMBEDDING: jnp.asarray(mask_embedding)}
    return Encoder(name=name, apply_fn=apply_fn, params=jax.tree.map(jnp.asarray, params),
                   num_layers=arch.num_layers, hidden_size=arch.hidden_size,
                   sample_rate=af.SAMPLE_RATE, frame_rate=arch.frame_rate,
                   frame_offset_s=arch.frame_offset_s, num_frames_fn=arch.num_frames,
                   config=arch.config(), dtype=dtype, masked_apply_fn=masked_apply_fn,
                   mask_params=mask_params)


def _key(path) -> str:
    return "/".join(str(getattr(k, "key", k)) for k in path)


def _flat(params) -> dict[str, np.ndarray]:
    return {_key(p): np.asarray(v, np.float32)
            for p, v in jax.tree_util.tree_leaves_with_path(jax.device_get(params))}


def save(arch: MelArch, params, out_dir, mask_embedding=None) -> Path:
    """Writes config.json + model.safetensors (``masked_spec_embed`` [D] when given)."""
    from safetensors.numpy import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    flat = _flat(params)
    if mask_embedding is not None:
        flat[MASK_EMBEDDING] = np.asarray(mask_embedding, np.float32)
    save_file(flat, str(out / checkpoint.SAFETENSORS))
    (out / "config.json").write_text(json.dumps(arch.config(), indent=2) + "\n")
    return out


def load(path, *, dtype=jnp.float32) -> Encoder:
    """Loads a directory written by :func:`save` (or the legacy causal format); a missing,
    extra or misshaped tensor raises :class:`checkpoint.CheckpointError` naming it."""
    path = Path(path)
    arch = arch_from_config(checkpoint.read_config(path / "config.json"), str(path / "config.json"))
    abstract = jax.eval_shape(lambda: init_params(arch, jax.random.PRNGKey(0)))
    want = {_key(p): tuple(v.shape) for p, v in jax.tree_util.tree_leaves_with_path(abstract)}
    state = checkpoint.read_state_dict(path)
    emb: Optional[np.ndarray] = None
    if MASK_EMBEDDING in state:
        want[MASK_EMBEDDING] = (arch.hidden_size,)
    checkpoint.check_state_dict(want, state, path)
    params: dict = {}
    for key, value in state.items():
        if key == MASK_EMBEDDING:
            emb = np.asarray(value, np.float32)
        else:
            w2v.set_path(params, tuple(key.split("/")), np.asarray(value, np.float32))
    return make_encoder(arch, params, name=str(path), mask_embedding=emb, dtype=dtype)
