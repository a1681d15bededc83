"""Classic speech features in JAX: STFT, mel filterbank, Whisper log-mel, MFCC + deltas.

One implementation, shared by the Whisper front end (:mod:`speechmi_jax.encoders.whisper`)
and the feature baselines (:mod:`speechmi_jax.encoders.baselines`).

Frame geometry (16 kHz, ``n_fft = 400`` = 25 ms periodic Hann window, ``hop = 160`` = 10 ms):
frames are *centred* (``center=True`` as in ``torch.stft`` / librosa / Whisper), so frame
``i`` is centred at sample ``i * hop`` (time ``i / 100`` s). A signal of ``S`` samples gives
``ceil(S / hop)`` frames, the frames whose centre lies inside ``[0, S)``; this equals Whisper's
3000 frames for a 30 s window (``torch.stft`` gives 3001 and Whisper drops the last one).

Padding convention: samples at or past an utterance's length are zeroed, the left edge is
reflect-padded (as ``torch.stft``), and the right edge is zero-padded by default, so that an
utterance's frames are the same alone and inside a zero-padded batch; ``right_pad="reflect"``
reproduces ``torch.stft`` on a signal that fills its whole buffer (Whisper's 30 s window).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

SAMPLE_RATE = 16000
N_FFT = 400
HOP = 160
N_MELS = 80
LOG_FLOOR = 1e-10
# A masked log-mel frame (encoders' masking hook, ``base.py``): every band at this log10 mel
# power, which is 0 in Whisper's normalised scale ``(log10 + 4) / 4``. One constant for every
# utterance, so a masked input frame says nothing about the audio it hides.
MASKED_LOG10_MEL = -4.0


def hann_window(n: int) -> np.ndarray:
    """Periodic Hann window ``w[k] = 0.5 - 0.5 cos(2 pi k / n)`` -> float64 [n]."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)


def _hz_to_mel_slaney(hz):
    """Slaney mel scale: linear below 1 kHz (3 mel / 200 Hz), logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    lin = 3.0 * hz / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1e-12) / 1000.0) * (27.0 / np.log(6.4))
    return np.where(hz >= 1000.0, log, lin)


def _mel_to_hz_slaney(mel):
    mel = np.asarray(mel, dtype=np.float64)
    lin = 200.0 * mel / 3.0
    log = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel - 15.0))
    return np.where(mel >= 15.0, log, lin)


def mel_filterbank(num_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE,
                   fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """Slaney-normalised triangular mel filters (librosa / Whisper) -> float64 [n_fft//2+1, num_mels].

    Band ``m`` rises linearly from ``f[m]`` to ``f[m+1]`` and falls to ``f[m+2]``, where the
    ``num_mels + 2`` edges ``f`` are equally spaced on the Slaney mel scale between ``fmin``
    and ``fmax`` (default Nyquist); each band is scaled by ``2 / (f[m+2] - f[m])`` (equal area).
    """
    fmax = sample_rate / 2.0 if fmax is None else fmax
    fft_freqs = np.linspace(0.0, sample_rate / 2.0, n_fft // 2 + 1)
    mels = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), num_mels + 2)
    edges = _mel_to_hz_slaney(mels)
    diff = np.diff(edges)
    slopes = edges[None, :] - fft_freqs[:, None]
    down = -slopes[:, :-2] / diff[:-1]
    up = slopes[:, 2:] / diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    return filters * (2.0 / (edges[2:] - edges[:-2]))[None, :]


def num_frames(lengths, hop: int = HOP) -> np.ndarray:
    """Centred frames whose centre lies inside each signal: ``ceil(length / hop)``."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return -(-lengths // hop)


def frame_mask(lengths: jax.Array, num: int, hop: int = HOP) -> jax.Array:
    """[B, num] bool: True on frames whose centre ``i * hop`` is inside the signal."""
    return jnp.arange(num)[None, :] * hop < lengths[:, None]


def zero_past_length(waveforms: jax.Array, lengths: jax.Array) -> jax.Array:
    """[B, S] -> [B, S] with samples at index >= lengths[b] set to 0."""
    keep = jnp.arange(waveforms.shape[1])[None, :] < lengths[:, None]
    return jnp.where(keep, waveforms, 0.0)


def power_spectrogram(waveforms: jax.Array, lengths: jax.Array, *, n_fft: int = N_FFT,
                      hop: int = HOP, right_pad: str = "zeros") -> jax.Array:
    """Centred short-time power spectrum ``|rfft(w * x_frame)|^2`` -> [B, ceil(S/hop), n_fft//2+1].

    Args:
      waveforms: [B, S] float32, S > n_fft // 2.
      lengths: [B] int, samples of each signal; later samples are treated as zeros.
      right_pad: ``"zeros"`` (padding-invariant, default) or ``"reflect"`` (``torch.stft``).
    """
    b, s = waveforms.shape
    half = n_fft // 2
    if s <= half:
        raise ValueError(f"power_spectrogram: need more than {half} samples, got waveforms {waveforms.shape}")
    x = zero_past_length(waveforms.astype(jnp.float32), lengths)
    left = x[:, 1:half + 1][:, ::-1]
    if right_pad == "reflect":
        right = x[:, s - half - 1:s - 1][:, ::-1]
    elif right_pad == "zeros":
        right = jnp.zeros((b, half), x.dtype)
    else:
        raise ValueError(f"right_pad must be 'zeros' or 'reflect', got {right_pad!r}")
    padded = jnp.concatenate([left, x, right], axis=1)
    t = math.ceil(s / hop)
    idx = np.arange(t)[:, None] * hop + np.arange(n_fft)[None, :]  # [T, n_fft]
    frames = padded[:, idx] * jnp.asarray(hann_window(n_fft), jnp.float32)
    spec = jnp.fft.rfft(frames, n=n_fft, axis=-1)
    return jnp.real(spec) ** 2 + jnp.imag(spec) ** 2


def log_mel(power: jax.Array, filters: np.ndarray) -> jax.Array:
    """``log10(max(P @ M, 1e-10))``: [B, T, F] power, [F, n_mels] filters -> [B, T, n_mels]."""
    mel = jnp.einsum("btf,fm->btm", power, jnp.asarray(filters, jnp.float32),
                     precision=jax.lax.Precision.HIGHEST)
    return jnp.log10(jnp.maximum(mel, LOG_FLOOR))


def mask_frames(x: jax.Array, frame_mask, value: float) -> jax.Array:
    """x [B, T, D] with the frames under ``frame_mask`` [B, T] bool (None: none) set to ``value``."""
    if frame_mask is None:
        return x
    if frame_mask.shape != x.shape[:2]:
        raise ValueError(f"frame_mask {tuple(frame_mask.shape)}: expected {tuple(x.shape[:2])} "
                         f"(batch, log-mel frames)")
    return jnp.where(frame_mask[..., None], jnp.asarray(value, x.dtype), x)


def whisper_log_mel(waveforms: jax.Array, lengths: jax.Array, *, num_mels: int = N_MELS,
                    right_pad: str = "zeros", frame_mask=None) -> jax.Array:
    """Whisper's normalised log-mel spectrogram -> [B, ceil(S/160), num_mels].

    ``L = log10(max(mel, 1e-10))``; ``L = max(L, max_t,m L - 8)`` (an 80 dB range below the
    utterance's loudest bin; the max runs over all frames of the row, where frames past the
    signal hold the floor value and never raise it); ``(L + 4) / 4``. Matches
    ``transformers.WhisperFeatureExtractor`` (with ``right_pad="reflect"`` on a full window).
    ``frame_mask`` [B, T] bool: frames set to :data:`MASKED_LOG10_MEL` after normalising.
    """
    power = power_spectrogram(waveforms, lengths, right_pad=right_pad)
    lm = log_mel(power, mel_filterbank(num_mels))
    top = jnp.max(lm, axis=(1, 2), keepdims=True)
    lm = jnp.maximum(lm, top - 8.0)
    return mask_frames((lm + 4.0) / 4.0, frame_mask, (MASKED_LOG10_MEL + 4.0) / 4.0)


def dct_matrix(num_in: int, num_out: int) -> np.ndarray:
    """Orthonormal DCT-II: ``C[m, k] = s_k cos(pi k (2m + 1) / (2 num_in))`` -> [num_in, num_out]."""
    m = np.arange(num_in)[:, None]
    k = np.arange(num_out)[None, :]
    c = np.cos(np.pi * k * (2 * m + 1) / (2 * num_in)) * np.sqrt(2.0 / num_in)
    c[:, 0] /= np.sqrt(2.0)
    return c


def deltas(x: jax.Array, num_valid: jax.Array, width: int = 2) -> jax.Array:
    """Regression deltas ``d_t = sum_n n (x_{t+n} - x_{t-n}) / (2 sum_n n^2)``, n = 1..width.

    Edges replicate the first / last *real* frame of each row (HTK), so frames past
    ``num_valid[b]`` never leak in. x: [B, T, D], num_valid: [B] -> [B, T, D].
    """
    t = x.shape[1]
    pos = jnp.arange(t)
    last = jnp.maximum(num_valid - 1, 0)[:, None]  # [B, 1]
    out = jnp.zeros_like(x)
    for n in range(1, width + 1):
        fwd = jnp.clip(pos[None, :] + n, 0, last)
        bwd = jnp.clip(pos[None, :] - n, 0, last)
        x_f = jnp.take_along_axis(x, fwd[:, :, None], axis=1)
        x_b = jnp.take_along_axis(x, bwd[:, :, None], axis=1)
        out = out + n * (x_f - x_b)
    return out / (2.0 * sum(n * n for n in range(1, width + 1)))


def mfcc(waveforms: jax.Array, lengths: jax.Array, *, num_ceps: int = 13, num_mels: int = N_MELS,
         with_deltas: bool = True, frame_mask=None) -> jax.Array:
    """MFCCs (+ deltas + delta-deltas) -> [B, ceil(S/160), 3 * num_ceps] (or num_ceps).

    ``c = DCT-II_ortho(ln max(mel, 1e-10))[:num_ceps]`` (c0 included, no liftering), then
    regression deltas of width 2 and deltas of those, with edges clamped to real frames.
    ``frame_mask`` [B, T] bool: those log-mel frames set to :data:`MASKED_LOG10_MEL` first.
    """
    power = power_spectrogram(waveforms, lengths)
    ln_mel = mask_frames(log_mel(power, mel_filterbank(num_mels)), frame_mask,
                         MASKED_LOG10_MEL) * math.log(10.0)
    c = jnp.einsum("btm,mk->btk", ln_mel, jnp.asarray(dct_matrix(num_mels, num_ceps), jnp.float32),
                   precision=jax.lax.Precision.HIGHEST)
    if not with_deltas:
        return c
    valid = jnp.asarray(-(-lengths // HOP), jnp.int32)
    d1 = deltas(c, valid)
    d2 = deltas(d1, valid)
    return jnp.concatenate([c, d1, d2], axis=-1)
