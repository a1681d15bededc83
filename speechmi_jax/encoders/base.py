"""The encoder interface every model in the package shares.

An :class:`Encoder` bundles a pure apply function with its parameters and the facts that
the rest of the package needs (layer count, width, sample rate, frame rate and offset).

Hidden-state convention (one place): ``hidden_states[0]`` is the transformer input (after
the feature projection and positional convolution), ``hidden_states[l]`` for ``l`` in
``1..L`` is the output of transformer layer ``l``; for pre-LN ("stable layer norm")
models the last one includes the encoder's final LayerNorm (the s3prl / transformers-4
convention). Padding never changes a real frame's features.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Optional

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np


@flax.struct.dataclass
class EncoderOutput:
    """What an encoder returns for a batch.

    Attributes:
      hidden_states: [L + 1, B, T, D]; index 0 = transformer input, l = layer l output.
      mask: [B, T] bool, True on real frames.
    """

    hidden_states: jax.Array
    mask: jax.Array


# (params, waveforms [B, S] float32, lengths [B] int32) -> EncoderOutput
ApplyFn = Callable[[Any, jax.Array, jax.Array], EncoderOutput]
# (params, mask_params, waveforms [B, S], lengths [B], frame_mask [B, T] bool) -> EncoderOutput
MaskedApplyFn = Callable[[Any, Any, jax.Array, jax.Array, jax.Array], EncoderOutput]


@dataclasses.dataclass
class Encoder:
    """A pretrained (or random-init, or fixed) encoder with its parameters.

    Call it as ``enc(waveforms [B, S] float32, lengths [B] int) -> EncoderOutput``; the call
    is jitted (one compilation per input shape: batch it with :func:`bucket_length`).
    ``apply_fn(params, waveforms, lengths)`` is the pure function, for users who want to
    jit/vmap/shard it themselves.
    """

    name: str
    apply_fn: ApplyFn
    params: Any
    num_layers: int
    hidden_size: int
    sample_rate: int
    frame_rate: float
    frame_offset_s: float
    # lengths in samples (numpy int array) -> number of real frames (numpy int array)
    num_frames_fn: Callable[[np.ndarray], np.ndarray]
    config: Any = None
    dtype: Any = jnp.float32
    # the masking hook (module docstring): its pure function and what it adds to ``params``
    # (the wav2vec 2.0 family: {"masked_spec_embed": [D]}; None for the log-mel encoders)
    masked_apply_fn: Optional[MaskedApplyFn] = None
    mask_params: Any = None
    _jitted: Optional[Callable] = dataclasses.field(default=None, repr=False)
    _jitted_masked: Optional[Callable] = dataclasses.field(default=None, repr=False)

    def __call__(self, waveforms, lengths) -> EncoderOutput:
        if self._jitted is None:
            self._jitted = jax.jit(self.apply_fn)
        waveforms, lengths = check_inputs(self.name, waveforms, lengths)
        return self._jitted(self.params, waveforms, lengths)

    def check_can_mask(self) -> None:
        """Raises, naming the encoder, when it has no masking hook."""
        if self.masked_apply_fn is None:
            raise ValueError(f"{self.name}: this encoder has no masking hook (a wav2vec 2.0 family "
                             f"checkpoint without masked_spec_embed?), so the masked view cannot "
                             f"be measured on it")

    def apply_masked(self, waveforms, lengths, frame_mask) -> EncoderOutput:
        """The forward pass with the frames under ``frame_mask`` [B, T] bool masked (T =
        ``num_frames(S)``, the encoder's own frames; see the module docstring); jitted."""
        self.check_can_mask()
        waveforms, lengths = check_inputs(self.name, waveforms, lengths)
        want = (waveforms.shape[0], int(self.num_frames(waveforms.shape[1])))
        frame_mask = np.asarray(frame_mask) if not isinstance(frame_mask, jax.Array) else frame_mask
        if frame_mask.dtype != bool or tuple(frame_mask.shape) != want:
            raise ValueError(f"{self.name}: frame_mask has shape {tuple(frame_mask.shape)} and dtype "
                             f"{frame_mask.dtype}: expected bool {list(want)} (batch, the encoder's "
                             f"frames for {waveforms.shape[1]} samples)")
        if self._jitted_masked is None:
            self._jitted_masked = jax.jit(self.masked_apply_fn)
        return self._jitted_masked(self.params, self.mask_params, waveforms, lengths,
                                   jnp.asarray(frame_mask))

    def num_frames(self, lengths) -> np.ndarray:
        """Number of real frames for each length in samples."""
        return np.asarray(self.num_frames_fn(np.asarray(lengths, dtype=np.int64)), dtype=np.int64)


def check_inputs(name: str, waveforms, lengths) -> tuple[jax.Array, jax.Array]:
    """Checks an encoder call's inputs -> (waveforms [B, S] float32, lengths [B] int32).

    Refused, each with a message naming the argument and what was expected:

    * integer waveforms: samples must be floats in [-1, 1]. int16 PCM is not scaled here,
      since an integer array does not say its scale (16-bit, 24-bit in int32, 32-bit):
      divide by 32768 (int16) or read the file with ``soundfile.read(dtype="float32")``;
    * lengths that are not whole numbers (1.5), negative, or longer than the padded
      waveform (S). A length of 0 is an empty padding row (no real frames).

    Values are checked on concrete (host or device) arrays only: under ``jax.jit`` /
    ``vmap`` the lengths are tracers and only the dtype and shape checks apply, so
    the pure ``apply_fn`` stays jittable.
    """
    dtype = getattr(waveforms, "dtype", None)  # no host copy of a device array
    dtype = np.dtype(dtype if dtype is not None else np.asarray(waveforms).dtype)
    if not np.issubdtype(dtype, np.floating):
        hint = " (int16 PCM: divide by 32768 first)" if dtype == np.int16 else ""
        raise TypeError(f"{name}: waveforms has dtype {dtype}: expected float samples in "
                        f"[-1, 1]{hint}")
    waveforms = jnp.asarray(waveforms, jnp.float32)
    if waveforms.ndim != 2 or np.shape(lengths) != waveforms.shape[:1]:
        raise ValueError(
            f"{name}: expected waveforms [B, S] and lengths [B], got "
            f"{tuple(waveforms.shape)} and {tuple(np.shape(lengths))}")
    if isinstance(lengths, jax.core.Tracer):
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"{name}: lengths has dtype {lengths.dtype}: expected integer "
                            f"sample counts")
        return waveforms, lengths.astype(jnp.int32)
    host = np.asarray(lengths)
    if host.dtype.kind not in "iuf" or (host.dtype.kind == "f" and
                                         not np.all(np.isfinite(host) & (host == np.round(host)))):
        bad = host if host.dtype.kind not in "iuf" else host[host != np.round(host)]
        raise ValueError(f"{name}: lengths {host.tolist()} holds {bad.ravel()[0].item()!r}: expected "
                         f"whole numbers of samples (dtype {host.dtype})")
    outside = (host < 0) | (host > waveforms.shape[1])
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(f"{name}: lengths[{i}] = {host[i]:g}: expected 0 <= length <= "
                         f"{waveforms.shape[1]} (the padded waveform length S of waveforms "
                         f"{tuple(waveforms.shape)})")
    return waveforms, jnp.asarray(host.astype(np.int32))


def bucket_length(num_samples: int, sample_rate: int = 16000, min_seconds: float = 1.0,
                  growth: float = 1.25) -> int:
    """Padded length (samples) for a batch whose longest item has ``num_samples``.

    Buckets grow geometrically from ``min_seconds`` by ``growth`` (1 s, 1.25 s, 1.5625 s,
    ...) and are rounded up to a multiple of 320 samples (one wav2vec 2.0 frame at 16 kHz),
    so a corpus of 1-30 s utterances compiles ~16 shapes and pads by at most 25 %.
    """
    base = int(round(min_seconds * sample_rate))
    if num_samples <= base:
        n = base
    else:
        k = math.ceil(math.log(num_samples / base, growth) - 1e-9)
        n = int(math.ceil(base * growth**k))
    return int(math.ceil(n / 320) * 320)


def split_heads(y: jax.Array, num_heads: int) -> jax.Array:
    """[B, T, D] -> [B, H, T, D / H], heads ahead of time for attention's batched matmuls.

    XLA's CPU dot with the (batch, head) dims in the middle of its operands (an einsum over
    [B, T, H, d_h]) took 17 ms per base-size layer against 10 ms in this layout.
    """
    b, t, d = y.shape
    return y.reshape(b, t, num_heads, d // num_heads).transpose(0, 2, 1, 3)


def merge_heads(y: jax.Array) -> jax.Array:
    """[B, H, T, d_h] -> [B, T, H * d_h]."""
    b, h, t, hd = y.shape
    return y.transpose(0, 2, 1, 3).reshape(b, t, h * hd)
