"""Training curves as TensorBoard event files, written next to ``metrics.jsonl`` and read back.

Written with ``tensorboardX`` (no TensorFlow needed): one scalar per metric of each dev record
(``train/<name>``, ``dev/<name>``, the record's step as the global step, its wall time as the
event's). A resumed run opens its writer with ``purge_step`` = the step it resumes from, so
TensorBoard drops what the interrupted run logged after that step; :func:`read_scalars` does the
same, so the curves of a resumed run equal those of an uninterrupted one.

    tensorboard --logdir RUN/            # every member's curves (RUN/tb or RUN/member-<i>/tb)
"""

from __future__ import annotations

import itertools
import os
import struct
import sys
from pathlib import Path

EVENTS_DIR = "tb"
_OPENED = itertools.count()  # writers this process opened: part of each file's name


def _tensorboardx():
    """``tensorboardX``, imported without PyTorch. Its writer module imports torch when it is
    installed, only to accept torch tensors as values; we write Python floats. Where torch is
    installed (a test environment, many users' machines) that import costs a pretraining
    process ~2 s and ~190 MB; a ``None`` in ``sys.modules`` makes it fail as if torch were
    absent. A torch this process already imported is left alone."""
    if "tensorboardX" in sys.modules or "torch" in sys.modules:
        import tensorboardX
        return tensorboardX
    sys.modules["torch"] = None
    try:
        import tensorboardX
    finally:
        del sys.modules["torch"]
    return tensorboardX


class EventWriter:
    """Scalars of metrics records -> ``<run or member dir>/tb/events.out.tfevents.*``."""

    def __init__(self, member_dir: Path, purge_step: int = 0):
        # tensorboardX names a file by the second it opened and the host: a run resumed within
        # the second its last writer opened would truncate that writer's file. The process id and
        # a per-process count make each writer's file its own.
        self._writer = _tensorboardx().SummaryWriter(
            str(Path(member_dir) / EVENTS_DIR), purge_step=purge_step or None, flush_secs=30,
            filename_suffix=f".{os.getpid()}.{next(_OPENED)}")

    def write(self, record: dict) -> None:
        """One metrics record {step, train_*, dev_*, ...}: every float under train/ or dev/."""
        step = int(record["step"])
        for key, value in record.items():
            split, _, name = key.partition("_")
            if split in ("train", "dev") and isinstance(value, float):
                self._writer.add_scalar(f"{split}/{name}", value, step)

    def close(self) -> None:
        self._writer.close()


def _records(path: Path):
    """The serialized records of one TFRecord file (length, crc, data, crc; crcs not checked)."""
    data = path.read_bytes()
    i = 0
    while i + 12 <= len(data):
        (n,) = struct.unpack("<Q", data[i:i + 8])
        start = i + 12
        if start + n + 4 > len(data):  # a torn last record (the writer was killed mid-write)
            return
        yield data[start:start + n]
        i = start + n + 4


def read_scalars(member_dir: Path) -> dict[str, list[tuple[int, float, float]]]:
    """{tag: [(step, value, wall_time), ...] sorted by step} from ``member_dir/tb``.

    Files are read in the order they were opened (the wall time of each one's first event); a
    ``SessionLog.START`` at step s (a resumed writer's ``purge_step``) drops the points at steps
    >= s written before it, as TensorBoard does.
    """
    _tensorboardx()
    from tensorboardX.proto import event_pb2

    files = []
    for f in (Path(member_dir) / EVENTS_DIR).glob("events.out.tfevents.*"):
        events = [event_pb2.Event.FromString(raw) for raw in _records(f)]
        if events:
            files.append((events[0].wall_time, f.name, events))
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for _, _, events in sorted(files):
        for ev in events:
            if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
                for points in out.values():
                    for s in [s for s in points if s >= ev.step]:
                        del points[s]
            elif ev.HasField("summary"):
                for v in ev.summary.value:
                    out.setdefault(v.tag, {})[int(ev.step)] = (float(v.simple_value), float(ev.wall_time))
    return {tag: [(s, v, w) for s, (v, w) in sorted(points.items())] for tag, points in out.items()}
