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
    """Header facts without decoding the samples.

    A WAV file whose ``data`` chunk declares more bytes than the file holds (a copy or a
    download cut short) raises as *truncated*: libsndfile would read it as shorter audio.
    """
    import soundfile as sf

    path = os.fspath(path)
    try:
        info = sf.info(path)
    except Exception as e:  # soundfile raises LibsndfileError/RuntimeError/OSError
        raise AudioError(f"{path}: unreadable audio ({e})") from e
    if info.format == "WAV":
        _check_wav_data_size(path)
    return AudioInfo(int(info.samplerate), int(info.frames), int(info.channels))


def _check_wav_data_size(path: str) -> None:
    """Raises if the RIFF ``data`` chunk's declared size runs past the end of the file.

    Sizes 0 and 0xFFFFFFFF are what streaming writers leave when the length was unknown:
    not checked.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        if f.read(12)[:4] != b"RIFF":
            return
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            declared = int.from_bytes(chunk[4:], "little")
            if chunk[:4] == b"data":
                held = size - pos - 8
                if declared not in (0, 0xFFFFFFFF) and declared > held:
                    raise AudioError(
                        f"{path}: truncated: the WAV header declares {declared} data bytes, the "
                        f"file holds {held} ({100 * held / declared:.0f}%); expected a complete "
                        f"file")
                return
            pos += 8 + declared + (declared & 1)


def require_mono(path: str | os.PathLike, channels: int) -> None:
    """Multi-channel audio is refused: pick a channel first (averaging talkers is not neutral)."""
    if channels != 1:
        raise AudioError(f"{os.fspath(path)}: {channels} channels; expected mono audio")


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Band-limited resampling with soxr's very-high-quality filter -> float32."""
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    import soxr

    return soxr.resample(audio.astype(np.float32, copy=False), from_rate, to_rate,
                         quality="VHQ").astype(np.float32, copy=False)


def telephone_band(audio: np.ndarray, sample_rate: int = 16000, band_rate: int = 8000) -> np.ndarray:
    """``audio`` [S] through a ``band_rate`` channel and back (soxr, as :func:`read_audio` reads an
    8 kHz recording at 16 kHz): nothing above ``band_rate / 2`` is left -> float32 [S]."""
    out = resample(resample(audio, sample_rate, band_rate), band_rate, sample_rate)
    return np.pad(out[:len(audio)], (0, max(len(audio) - len(out), 0)))


def read_audio(path: str | os.PathLike, sample_rate: int) -> tuple[np.ndarray, int]:
    """Reads a mono file -> (float32 [S] in [-1, 1] at ``sample_rate``, native rate).

    Multi-channel files raise (pick a channel first: averaging talkers is not neutral);
    empty, truncated (fewer samples than the header declares) and non-finite audio raise;
    other rates are resampled with soxr.
    """
    import soundfile as sf

    path = os.fspath(path)
    try:
        with sf.SoundFile(path) as f:
            if f.format == "WAV":
                _check_wav_data_size(path)
            declared = f.frames
            audio, native = f.read(dtype="float32", always_2d=True), f.samplerate
    except AudioError:
        raise
    except Exception as e:
        raise AudioError(f"{path}: unreadable audio ({e}); the file may be corrupt or "
                         f"truncated") from e
    require_mono(path, audio.shape[1])
    audio = audio[:, 0]
    if audio.size == 0:
        raise AudioError(f"{path}: empty audio (0 samples)")
    if audio.size != declared:
        raise AudioError(f"{path}: truncated: the header declares {declared} samples, the data "
                         f"holds {audio.size}; expected a complete file")
    if not np.all(np.isfinite(audio)):
        raise AudioError(f"{path}: audio holds NaN or infinite samples")
    return resample(audio, int(native), sample_rate), int(native)


def num_samples_at(info: AudioInfo, sample_rate: int) -> int:
    """Length in samples after resampling to ``sample_rate`` (what soxr returns)."""
    if info.sample_rate == sample_rate:
        return info.num_samples
    return int(np.floor(info.num_samples * sample_rate / info.sample_rate + 0.5))
