"""Shared by the SIGKILL resume tests: start a run, kill it once its first checkpoint exists."""

import os
import signal
import subprocess
import time
from pathlib import Path


def checkpoint_steps(ckpt: Path) -> list[int]:
    """The finished steps an Orbax CheckpointManager directory holds, sorted."""
    return sorted(int(p.name) for p in Path(ckpt).glob("*") if p.name.isdigit())


def kill_after_first_checkpoint(cmd, ckpt: Path, **popen_kwargs) -> list[int]:
    """Runs ``cmd``, SIGKILLs it as soon as ``ckpt`` holds a step (or it ends, or 600 s pass)
    and returns the steps saved by then; the caller asserts the kill landed mid-run."""
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             **popen_kwargs)
    deadline = time.monotonic() + 600
    while not checkpoint_steps(ckpt) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    return checkpoint_steps(ckpt)
