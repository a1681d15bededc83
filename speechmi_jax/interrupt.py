"""Stopping at a step boundary on Ctrl-C or SIGTERM (a scheduler's pre-emption).

Inside ``with graceful():`` (``speechmi run`` / ``demo`` / ``pretrain``: ``pipeline.py``,
``ssl/trainer.py``) SIGINT and SIGTERM only set a flag. The loops look at it where they can
stop without losing work, save what resuming needs and raise :class:`Interrupted`:

* the pretraining loop after a step (it checkpoints that step, with the train metrics since the
  last record, so the rerun writes the same ``metrics.jsonl``);
* an estimator bank after a chunk of steps (``estimators/train.py``: checkpoints that step);
* a feature extraction after a batch (the batches done are kept in ``<key>.partial/``);
* the run loop between two measures.

The ``speechmi`` command then prints one line saying where it stopped and the command that
resumes, and exits with 128 + the signal's number, the shell's convention: 130 for Ctrl-C
(SIGINT), 143 for SIGTERM. A second Ctrl-C stops at once (``KeyboardInterrupt``; the rerun
resumes from the last checkpoint, as after ``kill -9``). Outside ``graceful()`` (library calls,
other threads) the signals keep their usual effect. With several processes
(``distributed.py``) the loops that run in step ask every process (:func:`check_all`), so a
signal that reached one host stops them all at the same boundary; a feature extraction, where
each process encodes its own share, stops only where the signal arrived (each process' shard
keeps its finished batches).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading

from speechmi_jax import distributed

log = logging.getLogger("speechmi_jax.interrupt")

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_state = {"depth": 0, "signum": None}


class Interrupted(Exception):
    """Stopped by a signal at a step boundary; what resuming needs is saved."""

    def __init__(self, signum: int, where: str):
        self.signum, self.where = signum, where
        super().__init__(f"stopped by {signal.Signals(signum).name} at {where}")

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def requested() -> bool:
    """Whether a SIGINT / SIGTERM arrived inside :func:`graceful`."""
    return _state["signum"] is not None


def check(where: str) -> None:
    """Raises :class:`Interrupted` at ``where`` (``"step 40 of 100"``) if a stop was requested;
    call it once what resuming needs is saved."""
    if _state["signum"] is not None:
        raise Interrupted(_state["signum"], where)


def requested_anywhere() -> bool:
    """Whether a stop was requested on any process of the run (``distributed.any_process``;
    on one process, :func:`requested`). The loops every process runs in step (bank chunks,
    pretraining steps, the run loop between measures) ask this, so all of them stop at the same
    boundary and write its checkpoint together, even when the signal reached one host only."""
    return distributed.any_process(requested())


def check_all(where: str, anywhere: bool | None = None) -> None:
    """:func:`check` for the loops every process runs in step: raises :class:`Interrupted` on
    every process when a stop was requested on any (``anywhere``: that answer, if already
    asked at this boundary)."""
    if requested_anywhere() if anywhere is None else anywhere:
        raise Interrupted(_state["signum"] or signal.SIGTERM, where)


def _handler(signum, frame):
    if _state["signum"] is not None and signum == signal.SIGINT:
        raise KeyboardInterrupt  # the second Ctrl-C: stop now
    _state["signum"] = signum
    log.warning("%s: stopping at the next step boundary (saving a checkpoint first)%s",
                signal.Signals(signum).name,
                "; Ctrl-C again stops at once" if signum == signal.SIGINT else "")


@contextlib.contextmanager
def graceful():
    """SIGINT / SIGTERM set the flag :func:`check` reads, for the block (main thread only;
    nested blocks share the outermost one's flag)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handler) for s in _SIGNALS}
    _state["depth"] += 1
    try:
        yield
    finally:
        _state["depth"] -= 1
        for s, h in previous.items():
            signal.signal(s, h)
        if _state["depth"] == 0:
            _state["signum"] = None
