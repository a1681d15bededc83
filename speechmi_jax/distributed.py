"""Many processes, one run: the ``jax.distributed`` launch and what the package asks of it.

One process (the default) needs none of this and behaves as if it did not exist: every helper
here is then the identity or a no-op. With N processes (one per host, or per GPU), each runs
the same ``speechmi run | demo | pretrain`` command with its own process id:

    speechmi run CONFIG --coordinator HOST:PORT --num-processes N --process-id I
    SPEECHMI_COORDINATOR=HOST:PORT SPEECHMI_NUM_PROCESSES=N SPEECHMI_PROCESS_ID=I speechmi run CONFIG
    speechmi run CONFIG --distributed auto      # TPU pod slices, SLURM, Open MPI: jax finds them

:func:`start` calls ``jax.distributed.initialize`` before anything touches a device, with
bounded timeouts: processes that do not all connect within ``init_timeout_s`` fail naming the
coordinator; a process lost later (killed, its host gone) stops sending heartbeats and, within
``heartbeat_s`` seconds, jax's coordination service ends every other process with an error
naming the lost one ("The following tasks are unhealthy (stopped sending heartbeats): 1"; a
lost process 0, the coordinator, is named "the leader task").

What the rest of the package takes from here (README, "Running on many hosts"):

* :func:`is_main` decides who writes what is written once (results, report, plots, a run
  folder's ``config.json`` and parts, pretraining metrics and exported models);
* :func:`on_main` runs a step that may fail on process 0 only and tells every process whether
  it did, so a refused run stops everywhere instead of leaving the others waiting;
* :func:`barrier` waits for every process (a named barrier of the coordination service, with a
  timeout); :func:`agree` is process 0's verdict everywhere, :func:`any_process` the OR;
* :func:`put` makes one global ``jax.Array`` over a mesh of every process' devices from a host
  array that every process holds in full (``jax.make_array_from_process_local_data``: each
  process copies only the rows its devices own); :func:`to_host` brings a global array back to
  every process in full (an all-gather where the array spans other processes' devices);
* :func:`share` is a process' part of a list of work items (utterances): items
  ``i = process, process + N, ...``, so every item has exactly one owner.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
from typing import Callable, Optional

import jax
import numpy as np
from jax.experimental import multihost_utils

log = logging.getLogger("speechmi_jax.distributed")

ENV = {"coordinator": "SPEECHMI_COORDINATOR", "num_processes": "SPEECHMI_NUM_PROCESSES",
       "process_id": "SPEECHMI_PROCESS_ID", "distributed": "SPEECHMI_DISTRIBUTED",
       "heartbeat_s": "SPEECHMI_HEARTBEAT_S", "init_timeout_s": "SPEECHMI_INIT_TIMEOUT_S",
       "barrier_timeout_s": "SPEECHMI_BARRIER_TIMEOUT_S"}
# jax's heartbeat default (100 s) is kept: a shorter one risks ending a run whose process is
# only slow (a long XLA compile, a stalled shared disk). Tests pass a few seconds.
DEFAULT_HEARTBEAT_S = 100
DEFAULT_INIT_TIMEOUT_S = 300
# A barrier waits for the slowest process (its share of an encoder pass, process 0 merging the
# feature shards, or holding the run folder under --wait); lost processes are caught sooner by
# the heartbeat, so this only bounds a live process that stopped making progress.
DEFAULT_BARRIER_TIMEOUT_S = 24 * 3600


@dataclasses.dataclass(frozen=True)
class Launch:
    """How to join a run of several processes: explicit (coordinator, num_processes,
    process_id) or ``auto`` (``jax.distributed.initialize()`` detects the cluster)."""

    coordinator: Optional[str] = None
    num_processes: Optional[int] = None
    process_id: Optional[int] = None
    auto: bool = False
    heartbeat_s: int = DEFAULT_HEARTBEAT_S
    init_timeout_s: int = DEFAULT_INIT_TIMEOUT_S

    def __post_init__(self):
        explicit = (self.coordinator, self.num_processes, self.process_id)
        if self.auto and any(v is not None for v in explicit):
            raise ValueError("--distributed auto detects the cluster: expected no --coordinator, "
                             "--num-processes or --process-id with it")
        if not self.auto and None in explicit:
            missing = [f"--{k.replace('_', '-')} ({ENV[k]})" for k, v in zip(
                ("coordinator", "num_processes", "process_id"), explicit) if v is None]
            raise ValueError(f"several processes need all of --coordinator, --num-processes and "
                             f"--process-id; missing {', '.join(missing)}")
        if not self.auto and not 0 <= self.process_id < self.num_processes:
            raise ValueError(f"--process-id {self.process_id}: expected 0 <= id < "
                             f"--num-processes {self.num_processes}")


def add_arguments(parser) -> None:
    """The launch flags of ``speechmi run | demo | pretrain`` (each also read from ``ENV``)."""
    g = parser.add_argument_group("several processes (jax.distributed; README, 'Running on "
                                  "many hosts')")
    g.add_argument("--coordinator", metavar="HOST:PORT",
                   help=f"process 0's address, the same for every process ({ENV['coordinator']})")
    g.add_argument("--num-processes", type=int, metavar="N",
                   help=f"how many processes run this command ({ENV['num_processes']})")
    g.add_argument("--process-id", type=int, metavar="I",
                   help=f"this process, 0..N-1 ({ENV['process_id']})")
    g.add_argument("--distributed", choices=("auto",),
                   help="let jax find the cluster: TPU pod slices, SLURM, Open MPI "
                        f"({ENV['distributed']}=auto)")
    g.add_argument("--heartbeat-timeout", type=int, metavar="SECONDS", dest="heartbeat_s",
                   help=f"a process silent this long is lost and the others stop, naming it "
                        f"(default {DEFAULT_HEARTBEAT_S}; {ENV['heartbeat_s']})")


def launch_from(args, environ=None) -> Optional[Launch]:
    """The :class:`Launch` the flags (first) or ``ENV`` ask for, or None for one process."""
    environ = os.environ if environ is None else environ

    def get(name, cast=str):
        value = getattr(args, name, None)
        if value is None and environ.get(ENV[name], "") != "":
            try:
                value = cast(environ[ENV[name]])
            except ValueError:
                raise ValueError(f"{ENV[name]}={environ[ENV[name]]!r}: expected {cast.__name__}"
                                 ) from None
        return value

    mode = get("distributed")
    if mode not in (None, "auto"):
        raise ValueError(f"{ENV['distributed']}={mode!r}: expected 'auto'")
    explicit = dict(coordinator=get("coordinator"), num_processes=get("num_processes", int),
                    process_id=get("process_id", int))
    if mode is None and all(v is None for v in explicit.values()):
        return None
    if mode is None and explicit["num_processes"] == 1 and explicit["process_id"] in (0, None):
        return None  # one process asked for explicitly: nothing to join
    return Launch(**(explicit if mode is None else {}), auto=mode == "auto",
                  heartbeat_s=get("heartbeat_s", int) or DEFAULT_HEARTBEAT_S,
                  init_timeout_s=get("init_timeout_s", int) or DEFAULT_INIT_TIMEOUT_S)


def start(launch: Optional[Launch]) -> None:
    """Joins the run (``jax.distributed.initialize``; must precede any device use), or does
    nothing for ``None``."""
    if launch is None:
        return
    kwargs = dict(initialization_timeout=launch.init_timeout_s,
                  heartbeat_timeout_seconds=launch.heartbeat_s)
    if not launch.auto:
        kwargs.update(coordinator_address=launch.coordinator,
                      num_processes=launch.num_processes, process_id=launch.process_id)
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # noqa: BLE001 - every failure to join reads the same to a user
        where = "auto-detected cluster" if launch.auto else f"coordinator {launch.coordinator}"
        raise ConnectionError(f"process {launch.process_id} could not join the run at {where} "
                              f"within {launch.init_timeout_s} s: {type(e).__name__}: {e}") from e
    log.info("process %d of %d (%d local devices of %d)", jax.process_index(),
             jax.process_count(), jax.local_device_count(), jax.device_count())


def process_index() -> int:
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main() -> bool:
    """Process 0: the one that writes what is written once."""
    return jax.process_index() == 0


def barrier_timeout_s() -> int:
    return int(os.environ.get(ENV["barrier_timeout_s"]) or DEFAULT_BARRIER_TIMEOUT_S)


_barriers = itertools.count()


def barrier(name: str) -> None:
    """Waits until every process reaches the barrier ``name`` (each process passes the same
    barriers in the same order; a counter makes each one's key unique)."""
    if jax.process_count() == 1:
        return
    from orbax.checkpoint import multihost
    key = f"speechmi/{next(_barriers)}/{name}"
    multihost.get_barrier_sync_fn()(key=key, timeout_ms=barrier_timeout_s() * 1000)


def agree(flag: bool) -> bool:
    """Process 0's ``flag`` on every process (a decision taken once, on what process 0 sees)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(multihost_utils.broadcast_one_to_all(np.int32(bool(flag))))


def any_process(flag: bool) -> bool:
    """True on every process when ``flag`` is true on any (a signal that reached one host)."""
    if jax.process_count() == 1:
        return bool(flag)
    return bool(np.any(multihost_utils.process_allgather(np.int32(bool(flag)))))


def on_main(fn: Callable[[], object], what: str):
    """Runs ``fn`` on process 0; every process learns whether it succeeded. Returns ``fn()``
    on process 0 and None elsewhere; when it raised, process 0 re-raises and the others raise
    a RuntimeError naming ``what`` (process 0's error says why)."""
    result, error = None, None
    if is_main():
        try:
            result = fn()
        except Exception as e:  # noqa: BLE001 - re-raised below, after the others know
            error = e
    if not agree(error is None):
        if error is not None:
            raise error
        raise RuntimeError(f"{what} failed on process 0 (its error says why)")
    return result


def share(num_items: int, process: Optional[int] = None, count: Optional[int] = None) -> np.ndarray:
    """The items of ``range(num_items)`` that ``process`` (default: this one) of ``count``
    owns: every ``count``-th from ``process`` (interleaved, so a list sorted by split or length
    spreads evenly)."""
    process = jax.process_index() if process is None else process
    count = jax.process_count() if count is None else count
    return np.arange(process, num_items, count)


def put(host, sharding):
    """The host array ``host`` (identical on every process) as one global array with
    ``sharding``; each process copies in only the parts its devices hold."""
    host = np.asarray(host)
    return jax.make_array_from_process_local_data(sharding, host, host.shape)


def to_host(tree):
    """Every leaf of ``tree`` as a numpy array, in full on every process (an all-gather for
    an array that spans other processes' devices; a plain device-to-host copy otherwise)."""
    def one(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable and not x.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(jax.device_get(x))
    return jax.tree.map(one, tree)


def one_device_per_process() -> list:
    """The first device of each process: the smallest mesh every process takes part in (a
    small bank that one device serves; on one process, ``jax.devices()[:1]``)."""
    return [min((d for d in jax.devices() if d.process_index == p), key=lambda d: d.id)
            for p in range(jax.process_count())]
