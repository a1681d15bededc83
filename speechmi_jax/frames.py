"""Frame/label alignment: the one place that maps time alignments onto encoder frames.

Convention: encoder frame ``i`` is centred at ``frame_offset_s + i / frame_rate`` seconds,
and its label is the phone whose segment ``[start_s, end_s)`` contains that centre. Frames
whose centre lies in no segment get ``IGNORE`` (-1) and are left out of every estimate.

Each encoder states its ``frame_rate`` (frames per second) and ``frame_offset_s`` (centre of
frame 0); e.g. the wav2vec 2.0 conv stem (receptive field 400 samples, hop 320 at 16 kHz)
has frame_rate 50 and frame_offset_s 0.0125.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

IGNORE = -1

Segment = tuple[float, float, str]


def frame_centres(num_frames: int, frame_rate: float, frame_offset_s: float) -> np.ndarray:
    """Centre time in seconds of each of ``num_frames`` frames -> float64 [num_frames]."""
    return frame_offset_s + np.arange(num_frames, dtype=np.float64) / float(frame_rate)


def segments_to_frame_labels(
    segments: Sequence[Segment],
    num_frames: int,
    frame_rate: float,
    frame_offset_s: float,
    label_to_id: Mapping[str, int],
) -> np.ndarray:
    """Labels each frame with the segment under its centre -> int32 [num_frames].

    ``segments`` are ``(start_s, end_s, label)`` sorted by time and non-overlapping;
    frames outside every segment get ``IGNORE``. An unknown label raises ``KeyError``
    naming it.
    """
    out = np.full((num_frames,), IGNORE, dtype=np.int32)
    if num_frames == 0 or not segments:
        return out
    centres = frame_centres(num_frames, frame_rate, frame_offset_s)
    starts = np.asarray([s[0] for s in segments], dtype=np.float64)
    ends = np.asarray([s[1] for s in segments], dtype=np.float64)
    try:
        ids = np.asarray([label_to_id[s[2]] for s in segments], dtype=np.int32)
    except KeyError as e:
        raise KeyError(
            f"label {e.args[0]!r} is not in the label set ({len(label_to_id)} labels: "
            f"{sorted(label_to_id)[:10]}...)") from None
    # Index of the last segment starting at or before each centre.
    idx = np.searchsorted(starts, centres, side="right") - 1
    valid = idx >= 0
    idx_c = np.clip(idx, 0, len(segments) - 1)
    valid &= centres < ends[idx_c]
    out[valid] = ids[idx_c[valid]]
    return out
