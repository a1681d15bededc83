"""The bank loop: mesh + shardings, chunks of jitted steps, dev selection, Orbax checkpoints.

``fit_bank`` trains a bank (see ``bank.py``) on one mesh of devices:

* mesh axes ("data", "probe"): items are sharded over "data" (the full-batch gradient becomes a
  sum of per-device partial sums that XLA all-reduces; minibatch runs keep the training items on
  every device and shard each drawn batch, unless ``Problem.shard_minibatch`` is False), the P
  grid points over "probe". The same code runs on 1 CPU, 8 simulated CPUs, a GPU box or a TPU
  slice; only the mesh changes.
* every ``eval_every`` steps the dev loss of every estimator is measured and the best-so-far
  snapshot updated (inside the same jitted call, no host round trip per step);
* ``fit_layer_chunks`` runs one bank per chunk of layers (bounding the memory that holds the
  features) and collects one result per layer; every estimator family calls it;
* every ``checkpoint_every`` steps (unless the last save is under ``checkpoint_min_seconds``
  old), at the last step and at a requested stop, the whole state (params, optimizer state,
  step, RNG key, best-so-far) is saved in a ``training.CheckpointStore``, together with a JSON
  record of the run's identity (problem, grid, data fingerprint) and a checksum of the state;
  once a save has finished, the size and SHA-256 of its files are listed too. On start, the
  newest checkpoint whose identity matches is restored; one whose files differ from their list,
  that cannot be read, or whose checksum fails is moved aside to ``corrupt-<step>`` with a
  warning and the previous one is tried (the replayed run then saves that step afresh).

A resumed run replays exactly the computation of an uninterrupted one (batches are a function of
(key, step)), so on the same mesh its estimates are bitwise identical.

Several processes (``distributed.py``): the mesh holds every process' devices; each process
holds the bank's host data in full and copies in the rows its devices own
(``distributed.put``); the chosen estimators' held-out items and the dev losses come back to
every process in full (``distributed.to_host``), so every process computes the same records.
Checkpoints are written by all processes together (Orbax), their file lists by process 0; a
run resumes on the same number of processes and devices (the mesh decides the shapes each
process saves).
"""

from __future__ import annotations

import dataclasses
import gc
import math
import time
from functools import partial
from pathlib import Path

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec as PS

from speechmi_jax import distributed, interrupt, training
from speechmi_jax.estimators import bank as bank_lib


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How a bank is trained.

    optimizer: "lbfgs" (full batch; the grid's learning rates are unused) or "adam".
    steps: total optimisation steps (rounded up to a multiple of eval_every).
    batch_size: minibatch size for adam; None = full batch.
    eval_every: steps between dev evaluations (the resolution of the chosen stopping step).
    checkpoint_every: steps between checkpoints (a multiple of eval_every); None = never.
    checkpoint_min_seconds: a checkpoint step is skipped when the last save (or the start) was
        less than this many seconds before it; the last step and a stop are always saved. 0 =
        every ``checkpoint_every`` steps.
    mesh_shape: (data, probe) device counts; None = all devices on "data".
    """

    optimizer: str = "lbfgs"
    steps: int = 100
    batch_size: int | None = None
    eval_every: int = 5
    checkpoint_every: int | None = None
    checkpoint_dir: str | None = None
    checkpoint_min_seconds: float = 0.0
    max_to_keep: int = 3
    mesh_shape: tuple[int, int] | None = None
    devices: tuple | None = None
    seed: int = 0

    def __post_init__(self):
        if self.optimizer not in bank_lib.OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r}: expected one of {bank_lib.OPTIMIZERS}")
        if self.optimizer == "lbfgs" and self.batch_size is not None:
            raise ValueError("optimizer='lbfgs' is full batch: expected batch_size=None")
        if self.eval_every < 1 or self.steps < 1:
            raise ValueError(f"steps={self.steps}, eval_every={self.eval_every}: expected >= 1")
        if self.checkpoint_every is not None and self.checkpoint_every % self.eval_every:
            raise ValueError(
                f"checkpoint_every={self.checkpoint_every} must be a multiple of "
                f"eval_every={self.eval_every}"
            )
        if not self.checkpoint_min_seconds >= 0:
            raise ValueError(f"checkpoint_min_seconds={self.checkpoint_min_seconds}: expected >= 0")


def pad_items(data: dict, layer_fields, multiple: int) -> tuple[dict, int]:
    """Pads every field along its item axis to a multiple of `multiple` (zeros, weight 0).

    data: host arrays, layer fields [L, N, ...], others [N, ...], with "w" [N]. Returns the padded
    dict and the real item count N.
    """
    n = data["w"].shape[0]
    extra = (-n) % multiple
    out = {}
    for k, v in data.items():
        axis = 1 if k in layer_fields else 0
        widths = [(0, 0)] * v.ndim
        widths[axis] = (0, extra)
        out[k] = np.pad(v, widths) if extra else v
    return out, n


def _data_sharding(mesh, data: dict, layer_fields, split: bool = True) -> dict:
    """Items split over "data" (or, with split=False, on every device)."""
    spec = lambda k, v: PS() if not split else PS(None, "data") if k in layer_fields else PS("data")
    return {k: NamedSharding(mesh, spec(k, v)) for k, v in data.items()}


def _state_sharding(mesh, state: dict, grid_size: int):
    probe_split = grid_size % mesh.shape["probe"] == 0
    lp = NamedSharding(mesh, PS(None, "probe") if probe_split else PS())
    rep = NamedSharding(mesh, PS())
    return jax.tree.map(lambda x: lp if np.ndim(x) >= 2 else rep, state)


@partial(jax.jit, static_argnums=(0, 1, 2, 3, 4, 5), donate_argnums=(6,))
def _train_chunk_jit(problem, mesh, optimizer, batch_size, n_train, n_steps, state, hp, train, dev):
    split = problem.shard_minibatch
    shardings = _data_sharding(mesh, train, problem.layer_fields, split)
    constrain = lambda batch: jax.lax.with_sharding_constraint(batch, shardings)
    return bank_lib.train_chunk(problem, optimizer, batch_size, n_train, n_steps, state, hp, train, dev,
                                constrain)


@partial(jax.jit, static_argnums=(0,), donate_argnums=(1,))
def _final_eval_jit(problem, state, dev):
    return bank_lib.update_best(problem, state, dev)


@partial(jax.jit, static_argnums=(0,))
def _evaluate_chosen(problem, state, data):
    """The held-out quantities of each layer's chosen estimator, and the choice [L]."""
    params, choice = bank_lib.chosen_params(state)
    return bank_lib.over_layers(problem.evaluate, (params,), data, problem.layer_fields), choice


@dataclasses.dataclass
class BankResult:
    """Outcome of fit_bank, per layer l.

    test: {name: [L, n_test]} per-item held-out quantities of the chosen estimator.
    choice: [L] grid index chosen on dev; step: [L] its stopping step; dev_loss: [L, P].
    """

    test: dict
    choice: np.ndarray
    step: np.ndarray
    dev_loss: np.ndarray
    resumed_from: int | None


def _bank_identity(problem: bank_lib.Problem, grid: bank_lib.Grid, config: TrainConfig,
                   n_chunks: int, fingerprint, identity_extra: dict | None) -> dict:
    """What a bank's checkpoints must match to be resumed (problem, grid, schedule, data)."""
    return {
        "problem": problem.name,
        "problem_config": repr(problem.config),
        "grid": dataclasses.asdict(grid),
        "optimizer": config.optimizer,
        "steps": n_chunks * config.eval_every,
        "batch_size": config.batch_size,
        "eval_every": config.eval_every,
        "seed": config.seed,
        "data": fingerprint,
        **(identity_extra or {}),
    }


def _save_is_due(config: TrainConfig, last_save: float) -> bool:
    """Whether ``checkpoint_min_seconds`` have passed since ``last_save`` (a monotonic time). Every
    process saves or none does: the clocks differ, so any one's "due" counts."""
    if not config.checkpoint_min_seconds:
        return True
    return distributed.any_process(time.monotonic() - last_save >= config.checkpoint_min_seconds)


def _train_chunks(problem: bank_lib.Problem, mesh, config: TrainConfig, n_train: int,
                  n_chunks: int, state, hp, train_d, dev_d, ckpt):
    """Runs the chunks of ``eval_every`` steps not done yet, checkpointing as configured and
    stopping at a chunk boundary on SIGINT / SIGTERM -> the state; closes ``ckpt``."""
    try:
        done = int(state["step"]) // config.eval_every
        last_save = time.monotonic()
        for chunk in range(done, n_chunks):
            state = _train_chunk_jit(
                problem, mesh, config.optimizer, config.batch_size, n_train, config.eval_every,
                state, hp, train_d, dev_d,
            )
            step = (chunk + 1) * config.eval_every
            stop = interrupt.requested_anywhere()  # SIGINT / SIGTERM: save this step, then stop
            if ckpt is not None and config.checkpoint_every and (
                chunk == n_chunks - 1 or stop
                or (step % config.checkpoint_every == 0 and _save_is_due(config, last_save))
            ):
                ckpt.save(step, state)
                last_save = time.monotonic()
            if chunk < n_chunks - 1:
                interrupt.check_all(f"step {step} of {n_chunks * config.eval_every}", stop)
    finally:
        if ckpt is not None:
            ckpt.close()
    return state


def fit_bank(
    problem: bank_lib.Problem,
    grid: bank_lib.Grid,
    config: TrainConfig,
    train: dict,
    dev: dict,
    test: dict,
    in_dims,
    *,
    pad_multiple: int = 1,
    identity_extra: dict | None = None,
    layer_ids=None,
    release_host: bool = False,
) -> BankResult:
    """Trains the bank on `train`, selects per layer on `dev`, evaluates the choice on `test`.

    train/dev/test: host numpy dicts (layer fields [L, N, ...], others [N, ...], "w" [N]).
    pad_multiple: dev/test item counts are padded to a multiple of lcm(pad_multiple, data devices)
    (InfoNCE evaluates in blocks of K, so it passes K). layer_ids [L]: the layers' ids, which
    seed their estimators' initialisation (default 0..L-1). release_host: empty the three dicts,
    field by field as each reaches the devices, so the host copies are freed while the bank
    trains (``device_put`` copies, and on CPU the copy is host memory too: without this a
    chunk's features sit in memory twice).
    """
    mesh = training.make_mesh(("data", "probe"), config.mesh_shape, config.devices)
    n_data = mesh.shape["data"]
    layer_fields = problem.layer_fields
    num_layers = next(v.shape[0] for k, v in train.items() if k in layer_fields)

    given = (train, dev, test)
    train, n_train = pad_items(train, layer_fields, n_data)
    eval_multiple = math.lcm(pad_multiple, n_data)
    dev, _ = pad_items(dev, layer_fields, eval_multiple)
    test, n_test = pad_items(test, layer_fields, eval_multiple)
    if config.batch_size is not None and config.batch_size > n_train:
        raise ValueError(f"batch_size={config.batch_size} exceeds the {n_train} training items")

    fingerprint = (training.data_fingerprint(*train.values(), *dev.values())
                   if config.checkpoint_dir is not None else None)

    host_bytes = sum(v.nbytes for d in (train, dev, test) for v in d.values())

    def put(d: dict, src: dict, sharding=None) -> dict:
        """d on the devices, field by field; with release_host each field's host copies (the
        padded one and the caller's) are dropped as soon as it is there, so at most one field
        is in memory twice."""
        shardings = _data_sharding(mesh, d, layer_fields)
        out = {}
        for k in list(d):
            out[k] = distributed.put(d[k], sharding or shardings[k])
            if release_host:
                out[k].block_until_ready()
                d.pop(k)
                src.pop(k, None)
        return out

    dev_d, test_d = put(dev, given[1]), put(test, given[2])
    # Full batch: items sharded over "data". Minibatches: every device holds all training items
    # (a gather from sharded rows costs a collective per step) and the drawn batch is sharded
    # (unless the problem keeps it whole on every device: Problem.shard_minibatch).
    train_d = put(train, given[0], None if config.batch_size is None else NamedSharding(mesh, PS()))
    hp = jax.tree.map(lambda x: distributed.put(x, NamedSharding(mesh, PS())), grid.arrays())
    del train, dev, test, given
    if release_host and host_bytes >= RELEASE_MIN_BYTES:
        # jax keeps a reference to the source of the latest device_put until the next one or
        # a full collection (measured: RSS stayed up by the array's size until gc.collect()).
        gc.collect()

    state = bank_lib.init_state(problem, config.optimizer, grid, num_layers, in_dims, config.seed,
                                layer_ids)
    shardings = _state_sharding(mesh, state, grid.size)
    state = jax.tree.map(distributed.put, state, shardings)

    n_chunks = -(-config.steps // config.eval_every)
    ckpt, resumed_from = None, None
    if config.checkpoint_dir is not None:
        identity = _bank_identity(problem, grid, config, n_chunks, fingerprint, identity_extra)
        ckpt = training.CheckpointStore(config.checkpoint_dir, identity, config.max_to_keep)
        abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), state, shardings)
        restored, _ = training.restore_latest([ckpt], abstract)
        if restored is not None:
            state = restored[0]
            resumed_from = int(state["step"])

    state = _train_chunks(problem, mesh, config, n_train, n_chunks, state, hp, train_d, dev_d,
                          ckpt)
    del train_d  # the training items' device copy is not needed for the evaluations
    state = _final_eval_jit(problem, state, dev_d)
    del dev_d

    best_loss = distributed.to_host(state["best_loss"])
    bad = ~np.isfinite(best_loss).any(axis=1)
    if bad.any():
        raise FloatingPointError(
            f"{problem.name}: every grid point diverged (dev loss NaN/inf) for layers "
            f"{np.flatnonzero(bad).tolist()}; lower the learning rates {grid.lr}"
        )
    items, choice = distributed.to_host(_evaluate_chosen(problem, state, test_d))
    items = {k: np.asarray(v)[:, :n_test] for k, v in items.items()}
    steps = distributed.to_host(state["best_step"])[np.arange(num_layers), choice]
    return BankResult(items, choice, steps, best_loss, resumed_from)


# A bank killed outright (SIGKILL, power) loses at most about this much training; a stop asked
# by SIGINT / SIGTERM saves its step. Saving every few seconds instead cost the demo's banks
# ~30 s of waiting on Orbax's previous save (~200 saves of 1-30 s banks; BENCHMARKS.md "Demo").
DEFAULT_CHECKPOINT_MIN_SECONDS = 60.0


def train_config(optimizer: str, steps: int, batch_size, eval_every: int, *, checkpoint_dir=None,
                 checkpoint_every=None, mesh_shape=None, devices=None, seed: int = 0) -> TrainConfig:
    """A TrainConfig that checkpoints only with a checkpoint_dir (the directory itself is set per
    layer chunk by fit_layer_chunks). An explicit ``checkpoint_every`` saves every that many
    steps; the default cadence is at most ten checkpoints a run and at most one per
    ``DEFAULT_CHECKPOINT_MIN_SECONDS`` (the last step is always saved)."""
    eval_every = min(eval_every, steps)
    min_seconds = 0.0
    if checkpoint_dir is not None and checkpoint_every is None:
        checkpoint_every = eval_every * max(1, (steps // eval_every) // 10)
        min_seconds = DEFAULT_CHECKPOINT_MIN_SECONDS
    return TrainConfig(
        optimizer=optimizer, steps=steps, batch_size=batch_size, eval_every=eval_every,
        checkpoint_every=checkpoint_every if checkpoint_dir is not None else None,
        checkpoint_min_seconds=min_seconds,
        mesh_shape=mesh_shape, devices=tuple(devices) if devices is not None else None, seed=seed,
    )


# Default bound on one chunk's features (``max_resident_bytes`` of every banked estimator). A
# chunk is in memory about twice while it is loaded (read, standardised) and copied to the
# devices, once while its bank trains (the host copy is released), so a process peaks near its
# base (the runtime, an encoder, compiled executables: ~0.7 GB for the demo) plus twice this.
DEFAULT_RESIDENT_BYTES = 2**30
# Below this many bytes of host features a bank or a finished measure does not pay for a full
# garbage collection (0.1-1 s in a large process, and the suite runs hundreds of small banks);
# what it would return is small next to the process anyway.
RELEASE_MIN_BYTES = 32 << 20


def layer_chunks(num_layers: int, layer_chunk, bytes_per_layer: int, max_resident_bytes: int):
    """Slices of [0, num_layers): `layer_chunk` layers each, or as many as fit in
    `max_resident_bytes` at `bytes_per_layer` (None: all that fit)."""
    if layer_chunk is not None and layer_chunk < 1:
        raise ValueError(f"layer_chunk must be >= 1 or None, got {layer_chunk}")
    size = layer_chunk or max(1, min(num_layers, max_resident_bytes // max(bytes_per_layer, 1)))
    return [slice(s, min(s + size, num_layers)) for s in range(0, num_layers, size)]


def fit_layer_chunks(
    problem: bank_lib.Problem,
    grid: bank_lib.Grid,
    config: TrainConfig,
    num_layers: int,
    load,
    collect,
    in_dims,
    *,
    bytes_per_layer: int,
    layer_chunk: int | None = None,
    max_resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    checkpoint_dir=None,
    pad_multiple: int = 1,
    layer_ids=None,
) -> list:
    """Trains one bank per chunk of layers and collects one result per layer, in layer order.

    load(chunk: slice) -> (train, dev, test) host dicts for layers[chunk] (see fit_bank);
    collect(result: BankResult, j, layer_id) -> the result of the chunk's j-th layer.
    layer_ids [num_layers]: the layers' names in checkpoint identities (default 0..L-1). Every
    chunk draws the same minibatches (a function of the seed and the step), so the chunking
    never changes an estimate (initialisation is seeded by the layer id, too). With several chunks each checkpoints into its own subdirectory.
    """
    layer_ids = list(range(num_layers)) if layer_ids is None else [int(i) for i in layer_ids]
    chunks = layer_chunks(num_layers, layer_chunk, bytes_per_layer, max_resident_bytes)
    out = []
    for chunk in chunks:
        ids = layer_ids[chunk]
        where = None
        if checkpoint_dir is not None:
            where = Path(checkpoint_dir)
            if len(chunks) > 1:
                where = where / f"layers_{chunk.start:03d}_{chunk.stop:03d}"
        cfg = dataclasses.replace(config, checkpoint_dir=None if where is None else str(where))
        res = fit_bank(problem, grid, cfg, *load(chunk), in_dims, pad_multiple=pad_multiple,
                       identity_extra={"layers": ids}, layer_ids=ids, release_host=True)
        out.extend(collect(res, j, layer) for j, layer in enumerate(ids))
    return out
