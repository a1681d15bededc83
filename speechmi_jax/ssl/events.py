"""Training curves as TensorBoard event files, written next to ``metrics.jsonl`` and read back.

Written with ``tensorboardX`` (no TensorFlow needed): one scalar per metric of each dev record
(``train/<name>``, ``dev/<name>``, the record's step as the global step, its wall time as the
event's). A resumed run opens its writer with ``purge_step`` = the step it resumes from, so
TensorBoard drops what the interrupted run logged after that step; :func:`read_scalars` does the
same, so the curves of a resumed run equal those of an uninterrupted one.

    tensorboard --logdir RUN/            # every member's curves (RUN/tb or RUN/member-<i>/tb)
"""

from __future__ import annotations

import struct
from pathlib import Path

EVENTS_DIR = "tb"


class EventWriter:
    """Scalars of metrics records -> ``<run or member dir>/tb/events.out.tfevents.*``."""

    def __init__(self, member_dir: Path, purge_step: int = 0):
        from tensorboardX import SummaryWriter

        self._writer = SummaryWriter(str(Path(member_dir) / EVENTS_DIR), purge_step=purge_step or None,
                                     flush_secs=30)

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

    Files are read in the order they were written; a ``SessionLog.START`` at step s (a resumed
    writer's ``purge_step``) drops the points at steps >= s written before it, as TensorBoard does.
    """
    from tensorboardX.proto import event_pb2

    files = sorted((Path(member_dir) / EVENTS_DIR).glob("events.out.tfevents.*"),
                   key=lambda p: (float(p.name.split(".")[3]), p.name))
    out: dict[str, dict[int, tuple[float, float]]] = {}
    for f in files:
        for raw in _records(f):
            ev = event_pb2.Event.FromString(raw)
            if ev.HasField("session_log") and ev.session_log.status == event_pb2.SessionLog.START:
                for points in out.values():
                    for s in [s for s in points if s >= ev.step]:
                        del points[s]
            elif ev.HasField("summary"):
                for v in ev.summary.value:
                    out.setdefault(v.tag, {})[int(ev.step)] = (float(v.simple_value), float(ev.wall_time))
    return {tag: [(s, v, w) for s, (v, w) in sorted(points.items())] for tag, points in out.items()}
