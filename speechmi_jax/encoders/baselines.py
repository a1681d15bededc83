"""Classic features as single-layer "encoders": the floor every learned layer must beat.

* ``logmel``: Whisper's normalised 80-band log-mel at 100 Hz (the exact input of the Whisper
  encoder, so "layer 0 of Whisper vs its input" compares like with like), D = 80.
* ``logmel-stack4``: the same log-mel with the 4 frames on either side concatenated (frames
  t - 4 .. t + 4, zeros past the utterance's edges), D = 720: context alone, the floor a model
  that sees context must beat (a self-supervised model's best layer is compared with it).
* ``logmel-past8``: the same log-mel with the 8 frames before concatenated (frames t - 8 .. t,
  zeros before the utterance), D = 720: the context a causal model (APC) can see at frame t,
  as many frames as ``logmel-stack4`` but none after t. A causal model's frame t never sees the
  40 ms after it that ``logmel-stack4`` holds, so this is its context-alone floor.
* ``mfcc``: 13 MFCCs (DCT-II of the natural-log 80-band mel power, c0 included) with
  regression deltas and delta-deltas (width 2), D = 39.

All share :mod:`speechmi_jax.encoders.audio_features` with the Whisper front end. They have
``num_layers = 0``: ``hidden_states`` is [1, B, T, D]. Frame ``i`` is centred at ``i * 10 ms``
(centred STFT: ``frame_rate = 100``, ``frame_offset_s = 0``); an utterance of ``n`` samples has
``ceil(n / 160)`` real frames. Samples past an utterance's length are zeroed and the right
edge is zero-padded, so an utterance's frames are the same alone and in a padded batch
(the log-mel's 80 dB floor uses the utterance's own maximum, which padding never raises).
Masked (``Encoder.apply_masked``), a masked frame's log-mel is the constant
``audio_features.MASKED_LOG10_MEL``: the log-mel baseline's masked frames carry nothing.
"""

from __future__ import annotations

import jax.numpy as jnp

from speechmi_jax.encoders import audio_features as af
from speechmi_jax.encoders.base import Encoder, EncoderOutput

# name -> (frames before t, frames after t) stacked with frame t
CONTEXT = {"logmel-stack4": (4, 4), "logmel-past8": (8, 0)}
BASELINE_DIMS = {"logmel": af.N_MELS, **{name: (before + 1 + after) * af.N_MELS
                                         for name, (before, after) in CONTEXT.items()}, "mfcc": 39}


def stack_context(x, mask, before: int, after: int):
    """x [B, T, D], mask [B, T] -> [B, T, (before + 1 + after) * D]: frames t - before .. t +
    after side by side, zeros outside the real frames (so padding changes nothing)."""
    t = x.shape[1]
    x = jnp.pad(jnp.where(mask[..., None], x, 0.0), ((0, 0), (before, after), (0, 0)))
    return jnp.concatenate([x[:, o:o + t] for o in range(before + 1 + after)], axis=-1)


def _features(name: str):
    """(waveforms, lengths, frame_mask [B, T] bool or None) -> [B, T, D]."""
    if name == "logmel":
        return lambda w, n, m=None: af.whisper_log_mel(w, n, frame_mask=m)
    if name in CONTEXT:
        def stacked(w, n, m=None):
            x = af.whisper_log_mel(w, n, frame_mask=m)
            return stack_context(x, af.frame_mask(n, x.shape[1]), *CONTEXT[name])
        return stacked
    if name == "mfcc":
        return lambda w, n, m=None: af.mfcc(w, n, frame_mask=m)
    raise ValueError(f"unknown baseline {name!r}; expected one of {sorted(BASELINE_DIMS)}")


def load_baseline(name: str) -> Encoder:
    """A name of :data:`BASELINE_DIMS` (``"logmel"``, ``"logmel-stack4"``, ...) as an :class:`Encoder` with one hidden state [1, B, T, D]."""
    feats = _features(name)

    def masked_apply_fn(params, mask_params, waveforms, lengths, frame_mask) -> EncoderOutput:
        del params, mask_params
        lengths = lengths.astype(jnp.int32)
        x = feats(waveforms, lengths, frame_mask)  # [B, T, D]
        mask = af.frame_mask(lengths, x.shape[1])
        return EncoderOutput(hidden_states=jnp.where(mask[:, :, None], x, 0.0)[None], mask=mask)

    def apply_fn(params, waveforms, lengths) -> EncoderOutput:
        return masked_apply_fn(params, None, waveforms, lengths, None)

    return Encoder(
        name=name,
        apply_fn=apply_fn,
        params={},
        num_layers=0,
        hidden_size=BASELINE_DIMS[name],
        sample_rate=af.SAMPLE_RATE,
        frame_rate=af.SAMPLE_RATE / af.HOP,
        frame_offset_s=0.0,
        num_frames_fn=af.num_frames,
        config={"features": name},
        masked_apply_fn=masked_apply_fn,
    )
