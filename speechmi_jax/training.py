"""The training core both trainers stand on: a device mesh and a verified checkpoint store.

``estimators/train.py`` (the estimator bank, ``fit_bank``) and ``ssl/trainer.py`` (the SSL
population, ``pretrain``) each build a mesh and checkpoint their state here:

* :func:`make_mesh`: a mesh with named axes over the given devices (default: every device of
  every process, all on the first axis); a shape that does not use exactly those devices is a
  ``ValueError``.
* :class:`CheckpointStore`: an Orbax ``CheckpointManager`` whose every step holds the state
  (item ``state``, or the name a store is given) and a JSON record (item ``meta``: the run's
  identity, the step and a checksum of the state). Once a save has finished (at the next save,
  or at ``close``) process 0 lists the size and SHA-256 of its files (:data:`FILE_LIST`) and the
  heap is trimmed (:func:`trim_heap`).
* :func:`use_compilation_cache`: JAX's persistent compilation cache in one folder per user, so
  a second run, a resumed one or a pretraining run of a shape seen before loads its executables
  instead of compiling them.
* :func:`restore_latest`: the newest step that every given store holds in good order. A step
  whose files differ from their list, that cannot be read, or whose state fails its checksum is
  moved aside to ``corrupt-<step>`` with a warning naming its path, and the previous step is
  tried (the replayed run then saves that step afresh); a step of another identity is refused.

Several processes (``distributed.py``): every process calls the store in the same order, Orbax
writes each step with all of them together; file lists are written and bad steps renamed by
process 0, the others wait at a barrier. A run resumes on the same number of processes and
devices (the mesh decides the shapes each process saves).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import math
import os
import warnings
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.sharding import AxisType

from speechmi_jax import distributed
from speechmi_jax.features import DEFAULT_CACHE

FILE_LIST = "speechmi_files.json"
META = "meta"


# The persistent compilation cache (:func:`use_compilation_cache`). JAX's default keeps only
# programs that took >= 1 s to compile; in the demo half of the compile time is programs under
# 1 s (one log-mel-stack encoder: 173 compilations, 20.2 s; those >= 1 s 10.3 s, those >= 0.1 s
# 17.8 s in 29 programs), so the floor is 0.1 s. The folder is bounded, least recently used out
# first (the demo's programs take 11 MB, 214 entries).
COMPILE_CACHE_MIN_SECONDS = 0.1
COMPILE_CACHE_MAX_BYTES = 1 << 30


def use_compilation_cache() -> str | None:
    """Turns on JAX's persistent compilation cache -> its folder (None: left as configured).

    The folder: ``xla`` in the user's speechmi cache (``$SPEECHMI_CACHE``, else
    ~/.cache/speechmi_jax: ``features.DEFAULT_CACHE``), shared by every run, resumed run and
    pretraining of the user. ``$JAX_COMPILATION_CACHE_DIR``, or a folder already set in
    ``jax.config``, wins; ``$JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS`` and
    ``$JAX_COMPILATION_CACHE_MAX_SIZE`` replace :data:`COMPILE_CACHE_MIN_SECONDS` and
    :data:`COMPILE_CACHE_MAX_BYTES`. A loaded executable is the one compiling would give (JAX
    keys entries by the program, the jax / jaxlib versions, the XLA flags and the devices), so
    results do not depend on the cache. A folder that cannot be made is a warning, and no
    cache. JAX reads these settings at its first compilation: call this before, as
    ``speechmi`` does."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return None
    folder = DEFAULT_CACHE / "xla"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # e.g. a read-only home: compile as without a cache
        warnings.warn(f"compilation cache folder {folder} cannot be made ({e}); compiling without "
                      "a persistent cache (set SPEECHMI_CACHE or JAX_COMPILATION_CACHE_DIR)", stacklevel=2)
        return None
    jax.config.update("jax_compilation_cache_dir", str(folder))
    if "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS" not in os.environ:
        jax.config.update("jax_persistent_cache_min_compile_time_secs", COMPILE_CACHE_MIN_SECONDS)
    if "JAX_COMPILATION_CACHE_MAX_SIZE" not in os.environ:
        jax.config.update("jax_compilation_cache_max_size", COMPILE_CACHE_MAX_BYTES)
    return str(folder)


def default_devices() -> list:
    """The devices a bank, a measure or a pretraining run uses when its caller names none:
    ``jax.devices()``, every process' (the test suite narrows it to one outside its sharding
    tests)."""
    return jax.devices()


def make_mesh(axes: tuple[str, ...], shape=None, devices=None) -> jax.sharding.Mesh:
    """A mesh named ``axes`` over ``devices`` (default :func:`default_devices`), ``shape``
    devices per axis (default: all on the first axis)."""
    devices = list(devices) if devices is not None else default_devices()
    shape = shape or (len(devices),) + (1,) * (len(axes) - 1)
    if math.prod(shape) != len(devices):
        raise ValueError(f"mesh_shape={shape} needs {math.prod(shape)} devices, got {len(devices)}")
    return jax.make_mesh(shape, axes, (AxisType.Auto,) * len(axes), devices=devices)


def data_fingerprint(*arrays) -> str:
    """Cheap identity of the data: shapes, dtypes and a strided sample of values (not a full hash)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        h.update(repr((a.shape, str(a.dtype))).encode())
        flat = a.reshape(-1)
        stride = max(flat.size // 4096, 1)
        h.update(np.ascontiguousarray(flat[::stride]).tobytes())
    return h.hexdigest()[:16]


def state_checksum(state) -> list[float]:
    """One float64 sum per leaf of ``state`` (gathered to every process)."""
    return [float(np.asarray(x, np.float64).sum()) for x in jax.tree.leaves(distributed.to_host(state))]


def checksums_match(a, b) -> bool:
    """Equal sums, NaN equal to NaN."""
    return len(a) == len(b) and all(
        (x == y) or (math.isnan(x) and math.isnan(y)) or (math.isinf(x) and x == y) for x, y in zip(a, b)
    )


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_file_list(step_dir: Path) -> None:
    """Records the size and SHA-256 of every file of a finished checkpoint step (FILE_LIST)."""
    files = {}
    for f in sorted(step_dir.rglob("*")):
        if f.is_file() and f.name != FILE_LIST:
            files[str(f.relative_to(step_dir))] = [f.stat().st_size, _sha256(f)]
    tmp = step_dir / (FILE_LIST + ".tmp")
    tmp.write_text(json.dumps({"files": files}))
    tmp.rename(step_dir / FILE_LIST)


def check_file_list(step_dir: Path) -> str | None:
    """Why a step's files differ from its FILE_LIST (missing, resized, changed), or None when they
    match or the step has no list (killed before writing it: Orbax's commit marker and the state
    checksum then decide)."""
    listed = step_dir / FILE_LIST
    if not listed.is_file():
        return None
    try:
        files = json.loads(listed.read_text())["files"]
    except (ValueError, KeyError, TypeError) as e:
        return f"file list {listed.name} unreadable ({type(e).__name__}: {e})"
    for rel, (size, digest) in files.items():
        f = step_dir / rel
        if not f.is_file():
            return f"file {rel} is missing"
        if f.stat().st_size != size:
            return f"file {rel} has {f.stat().st_size} bytes, {size} when saved"
        if _sha256(f) != digest:
            return f"file {rel} differs from the saved one (SHA-256)"
    return None


def trim_heap() -> None:
    """glibc's ``malloc_trim(0)``: hands the free pages of every malloc arena back to the OS
    (glibc keeps what a process frees, and memory freed on other threads, in their arenas,
    stays resident). A few ms; elsewhere than glibc a no-op."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class CheckpointStore:
    """An Orbax CheckpointManager over one state plus a JSON identity/checksum record per step.

    directory: the manager's folder (steps ``<directory>/<step>/``); identity: what a step must
    have been saved with to be restored (JSON; compared after a JSON round trip); item: the
    state's item name. unrecorded_ok: a step without a record (saved before records were kept:
    the pretraining trainer's item ``default`` alone) is restored unchecked instead of being
    set aside.
    """

    def __init__(self, directory, identity: dict, max_to_keep: int, *, item: str = "state",
                 unrecorded_ok: bool = False):
        self.directory = Path(directory).absolute()
        self.identity = json.loads(json.dumps(identity))  # the form it takes after a JSON round trip
        self.item = item
        self.unrecorded_ok = unrecorded_ok
        self.manager = ocp.CheckpointManager(
            self.directory, item_names=(item, META),
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )
        self._unlisted: int | None = None  # step saved (asynchronously) but not yet in a file list

    def steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state) -> None:
        """Saves ``state`` at ``step`` (asynchronously; a step already held is kept as it is)."""
        self._list_finished()
        meta = {"identity": self.identity, "checksum": state_checksum(state), "step": int(step)}
        saved = self.manager.save(step, args=ocp.args.Composite(
            **{self.item: ocp.args.StandardSave(state), META: ocp.args.JsonSave(meta)}))
        self._unlisted = int(step) if saved else None

    def _list_finished(self):
        """Waits for the pending asynchronous save, writes its file list (FILE_LIST) and returns
        the save's buffers to the OS (``trim_heap``)."""
        self.manager.wait_until_finished()
        if (self._unlisted is not None and distributed.is_main()
                and (self.directory / str(self._unlisted)).is_dir()):
            write_file_list(self.directory / str(self._unlisted))
            # An asynchronous save copies the whole state to host buffers and serialises it on
            # Orbax's writer threads while the next steps run; glibc kept the pages they freed
            # (no object outlives the save), so RSS rose by up to a state's size per save, ~80 MB
            # per checkpoint in the demo's InfoNCE bank (tests/test_est_checkpoint_memory.py fails
            # when the pages stay).
            trim_heap()
        self._unlisted = None

    def _set_aside(self, step: int, why: str):
        """Warns and renames a bad step directory to corrupt-<step>[-n] (kept for inspection, no
        longer a step), so the replayed run can save that step again. Every process finds the
        same damage (one shared folder); process 0 renames."""
        where = self.directory / str(step)
        target = self.directory / f"corrupt-{step}"
        n = 0
        while target.exists():
            n += 1
            target = self.directory / f"corrupt-{step}-{n}"
        if distributed.is_main():
            where.rename(target)
        distributed.barrier(f"set aside {where}")
        self.manager.reload()
        warnings.warn(f"checkpoint {where}: {why}; falling back to the previous checkpoint "
                      f"(the bad one is moved to {target})", stacklevel=4)

    def _record(self, step: int):
        """The step's JSON record; None for an unrecorded step the store accepts."""
        if self.unrecorded_ok and not (self.directory / str(step) / META).exists():
            return None
        return self.manager.restore(step, args=ocp.args.Composite(**{META: ocp.args.JsonRestore()}))[META]

    def restore(self, step: int, abstract_state):
        """The state saved at ``step`` after its files, record and checksum are verified; None
        (the step set aside with a warning) when any of them fails. ``abstract_state``: the
        shapes, dtypes and shardings to restore onto."""
        damage = check_file_list(self.directory / str(step))
        if damage:
            # Found before Orbax reads anything: a restore that fails part-way leaves reads in
            # flight whose callbacks then hit a closed event loop (one traceback each).
            self._set_aside(step, damage)
            return None
        try:
            meta = self._record(step)
        except Exception as e:  # noqa: BLE001 - any unreadable record means a bad checkpoint
            self._set_aside(step, f"metadata unreadable ({type(e).__name__}: {e})")
            return None
        if meta is not None and meta.get("identity") != self.identity:
            raise ValueError(
                f"checkpoint {self.directory / str(step)} belongs to a different run: saved "
                f"identity {meta.get('identity')} != this run's {self.identity}; use another "
                f"checkpoint_dir"
            )
        try:
            state = self.manager.restore(
                step, args=ocp.args.Composite(**{self.item: ocp.args.StandardRestore(abstract_state)})
            )[self.item]
            jax.block_until_ready(state)
        except Exception as e:  # noqa: BLE001
            self._set_aside(step, f"state unreadable ({type(e).__name__}: {e})")
            return None
        if meta is not None and not checksums_match(state_checksum(state), meta["checksum"]):
            self._set_aside(step, "state checksum mismatch (corrupt files)")
            return None
        return state

    def close(self):
        self._list_finished()
        self.manager.close()


def restore_latest(stores: list[CheckpointStore], abstract_state) -> tuple[list | None, int]:
    """(each store's state, step) at the newest step every store holds in good order, or
    (None, 0). A bad step is set aside in its store (``CheckpointStore.restore``) and the newest
    step common to all is tried again."""
    while True:
        common = set.intersection(*(set(s.steps()) for s in stores))
        if not common:
            return None, 0
        step = max(common)
        states = []
        for store in stores:
            state = store.restore(step, abstract_state)
            if state is None:
                break
            states.append(state)
        else:
            return states, step
