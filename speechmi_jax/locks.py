"""One writer per folder: an advisory lock file that names its holder.

``with hold(lock_path, what=...):`` takes an exclusive ``fcntl.flock`` on ``lock_path`` and
writes the holder's pid, host, start time and command line into it. Used for a run folder
(``<out>/speechmi.lock``: ``speechmi run`` / ``demo`` / ``pretrain``) and for each feature-cache
entry (``<cache>/<key>.lock``, so two runs that share a cache extract an entry once).

* Held by a live process: :class:`FolderBusy` at once (one line naming the holder), or, with
  ``wait=True``, a log line and a wait until it is released.
* Left by a process that is gone (``kill -9``, a node that died): the kernel has dropped the
  flock, but the file still names the holder; the next process takes the lock over and logs
  that it did, naming the old holder.
* Released: the file is emptied (never deleted: a process waiting on the old file would
  otherwise hold a lock nobody else sees) and unlocked.

Advisory: it orders processes that take it (every ``speechmi`` command does); it does not stop
a process that writes into the folder without it. On NFS, Linux maps ``flock`` to the
server's byte-range locks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

log = logging.getLogger("speechmi_jax.locks")


class FolderBusy(OSError):
    """Another process holds the folder's lock."""


def _holder(fd: int) -> dict | None:
    """What the lock file names (None when empty or unreadable)."""
    try:
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace")
        doc = json.loads(text) if text.strip() else None
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _busy_holder(fd: int, patience_s: float = 2.0) -> dict | None:
    """What the lock file of a held lock names. A holder that has just taken the flock writes
    its name a moment later (:func:`hold`), so an empty file is read again for up to
    ``patience_s`` seconds before it counts as naming none."""
    deadline = time.monotonic() + patience_s
    while (holder := _holder(fd)) is None and time.monotonic() < deadline:
        time.sleep(0.02)
    return holder


def describe(holder: dict | None) -> str:
    """``pid 1234 on host h since 2024-05-01 10:00:00 (speechmi run ...)``."""
    if not holder:
        return "another process (the lock file names none)"
    text = f"pid {holder.get('pid')} on host {holder.get('host')}"
    if holder.get("since"):
        text += f" since {holder['since']}"
    if holder.get("command"):
        text += f" ({holder['command']})"
    return text


def _me() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(["speechmi" if i == 0 and a.endswith(("cli.py", "speechmi")) else a
                                 for i, a in enumerate(sys.argv)])[:300]}


@contextlib.contextmanager
def hold(lock_path, *, what: str, wait: bool = False):
    """Holds ``lock_path`` exclusively for the block (see the module docstring).

    what: the folder it guards, for messages (``run folder runs/x``). wait: block until a live
    holder releases it instead of raising :class:`FolderBusy`.
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = describe(_busy_holder(fd))
            if not wait:
                raise FolderBusy(f"{what} is in use by {holder} (lock file {lock_path}); wait for "
                                 f"it to finish, pass --wait to wait for it, or use another "
                                 f"folder") from None
            log.warning("%s is in use by %s; waiting for it to finish", what, holder)
            fcntl.flock(fd, fcntl.LOCK_EX)
        stale = _holder(fd)
        if stale:
            log.warning("%s: taking over the lock of %s, which is no longer running (lock file "
                        "%s)", what, describe(stale), lock_path)
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(_me()) + "\n").encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
