"""Audio reading: any file libsndfile reads (WAV, FLAC, OGG, ...) -> mono float32 at a
target rate, resampled with soxr (VHQ) when the file's rate differs.

Resampling is never silent: :func:`read_audio` reports the native rate, and the corpus logs
each native rate it converts (once per rate) and records it in the utterance metadata.
"""

from __future__ import annotations

import logging
import os
from typing import NamedTuple

import numpy as np

log = logging.getLogger("speechmi_jax.data")


class AudioError(ValueError):
    """Audio that cannot be read or used (the message names the file)."""


class AudioInfo(NamedTuple):
    sample_rate: int
    num_samples: int
    channels: int

    @property
    def duration_s(self) -> float:
        return self.num_samples / self.sample_rate


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header facts without decoding the samples."""
    import soundfile as sf

    path = os.fspath(path)
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/OSError
        raise AudioError(f"{path}: unreadable audio ({e})") from e
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr's very-high-quality filter -> float32."""
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio.astype(np.float32, copy=False), from_rate, to_rate,
                         quality="VHQ").astype(np.float32, copy=False)


def read_audio(path: str | os.PathLike, sample_rate: int) -> tuple[np.ndarray, int]:
    """Reads a mono file -> (float32 [S] in [-1, 1] at ``sample_rate``, native rate).

    Multi-channel files raise (pick a channel first: averaging talkers is not neutral);
    empty and non-finite audio raise; other rates are resampled with soxr.
    """
    import soundfile as sf

    path = os.fspath(path)
    try:
        audio, native = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e})") from e
    if audio.shape[1] != 1:
        raise AudioError(f"{path}: {audio.shape[1]} channels; expected mono audio")
    audio = audio[:, 0]
    if audio.size == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return resample(audio, int(native), sample_rate), int(native)


def num_samples_at(info: AudioInfo, sample_rate: int) -> int:
    """Length in samples after resampling to ``sample_rate`` (what soxr returns)."""
    if info.sample_rate == sample_rate:
        return info.num_samples
    return int(np.floor(info.num_samples * sample_rate / info.sample_rate + 0.5))
