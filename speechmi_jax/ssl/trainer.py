"""The pretraining loop: a population of P models in one jitted, vmapped, data-parallel step.

``pretrain(config, out_dir)`` (the ``speechmi pretrain`` command) trains P members of one shape
that differ in seed, learning rate, mask probability, APC shift n or multi-target APC's past
weight (``config.population``):

* one ``jax.jit`` step = ``jax.vmap`` over members of (loss, grad, AdamW update, EMA update) on a
  ("member", "data") mesh (``NamedSharding``): the members' state [P, ...] is split over
  gcd(P, devices) devices, the batch [B, S] over gcd(B, the rest), so one member alone is plain
  data parallelism over all devices. (Replicating a population's state while sharding its batch
  over 8 simulated CPU devices deadlocked XLA's CPU collectives; this layout does not.) Every
  member sees the same batches (a function of (``config.seed``, step)); its own key (its seed)
  drives init, masking and Gumbel noise, folded with the step.
* optimiser: ``optax`` AdamW (``scale_by_adam`` -> decoupled weight decay -> linear warm-up then
  cosine decay to ``final_lr_fraction``), times the member's learning rate.
* every ``eval_every`` steps: the dev loss and bound of every member on fixed dev batches; one
  JSONL record per member (``metrics.jsonl``: train_* = mean over the steps since the last
  record, dev_*: loss, nll_bits, h_target_bits, bound_bits, perplexity (VQ), masked_acc (MLM),
  target_var (data2vec)), the same scalars as TensorBoard event files (``tb/``,
  :mod:`speechmi_jax.ssl.events`); a tqdm bar shows member 0's loss and bound.
* collapse guard (learned targets, codebooks): from the end of the learning-rate warm-up on,
  when a member's dev target variance (data2vec) or codebook perplexity (wav2vec 2.0, VQ-APC)
  falls under ``collapse.min_target_var`` / ``collapse.min_perplexity`` the trainer warns with
  the numbers and records ``"collapse": true``. (During warm-up a codebook may dip and recover:
  the zoo's VQ-APC recipe read dev perplexity 1.9 at step 100 of 300, 9.4 at step 500.)
* every ``checkpoint_every`` steps a ``training.CheckpointStore`` per member saves its params,
  optimiser state, EMA teacher, key and step (``keep`` newest) with a record of the run and a
  checksum. A rerun restores the newest step saved in good order by every member (a member's
  step whose files or checksum fail is moved aside to ``corrupt-<step>`` with a warning and
  an older step is used), drops later metrics records and replays: batches and keys are
  functions of (seed, step), so the result is identical to an uninterrupted run. SIGINT /
  SIGTERM stop the loop after the current step, which is checkpointed with the train metrics
  since the last record (``pending_metrics.json``), so the resumed run writes the same records
  (``interrupt.py``); one process holds the run folder at a time (``rundir.claim``).
* at the end each member's encoder is exported (``model/config.json`` + ``model/model.safetensors``),
  and also at every step of ``config.export_steps`` (``models/step<N>/``), so the models along
  training outlive ``keep_checkpoints``.

Several processes (``distributed.py``): the mesh holds every process' devices (members over
devices as on one host, each member's batch over the rest: data parallelism over processes);
every process draws the same batches (functions of (seed, step)) and copies in the rows its
devices own; checkpoints are written by all together (Orbax), their file lists by process 0,
and resume on the same number of processes; metrics, event files, ``pretrain_config.json`` and exported models are written by
process 0.

Layout of ``out_dir``: ``pretrain_config.json``, ``targets.npz`` (HuBERT: the k-means centroids), and for P = 1 ``metrics.jsonl``,
``checkpoints/``, ``model/`` (and ``models/step<N>/``); for P > 1 the same under ``member-<i>/``.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as PS

from speechmi_jax import distributed, interrupt, training
from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import loader
from speechmi_jax.ssl import data as data_lib
from speechmi_jax.ssl.events import EventWriter
from speechmi_jax.ssl import models, registry, table1
from speechmi_jax import rundir
from speechmi_jax.configs.base import ConfigError
from speechmi_jax.configs.pretrain.common import base_config, check_settings
from speechmi_jax.data.corpus import load_corpus

log = logging.getLogger("speechmi_jax.ssl")
HP_KEYS = ("seed", "lr", "mask_prob", "shift", "past_weight")
EVAL_FOLD = 2**31 - 1  # the eval key of a member: fold_in(member key, this)


class CollapseWarning(UserWarning):
    """A learned target's entropy proxy fell under the configured threshold."""


# ----------------------------------------------------------------------------- setup

def population(config) -> list[dict]:
    """Members' hyperparameters: each ``config.population`` list has length P or 1 (broadcast)."""
    pop = {k: list(config.population[k]) for k in HP_KEYS}
    sizes = {len(v) for v in pop.values()} - {1}
    if len(sizes) > 1:
        raise ValueError(f"config.population: lists must have one common length (or 1), got "
                         f"{ {k: len(v) for k, v in pop.items()} }")
    p = sizes.pop() if sizes else 1
    return [{k: v[i] if len(v) > 1 else v[0] for k, v in pop.items()} for i in range(p)]


def validate_config(config):
    """The pretraining config schema (``configs/pretrain/common.py``): the same keys, a known
    objective, population lists of one length, every value in its range (``common.RANGES``)
    and the rules that tie keys together. Returns ``config``; raises ``ConfigError`` naming
    the key."""
    expected, got = set(base_config().keys()), set(config.keys())
    if got != expected:
        raise ConfigError(f"pretraining config keys: unknown {sorted(got - expected)}, missing "
                          f"{sorted(expected - got)}; expected {sorted(expected)}")
    if config.objective not in table1.names():
        raise ConfigError(f"config key 'objective': {config.objective!r}; expected one of {table1.names()}")
    try:
        population(config)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    check_settings(config, ConfigError, causal=table1.objective(config.objective).causal)  # ranges: configs/pretrain/common.py
    return config


def stored_config(stored: dict):
    """A run's stored config (``pretrain_config.json``, a card's ``config``) as a ConfigDict with
    every key it predates at its default, which keeps the behaviour the run was trained with."""
    config = base_config()
    config.update(stored)
    return config


BACKBONES = ("logmel", "conv")


def backbone(config):
    """``config.model.backbone``: ``"logmel"`` (the zoo's transformer over stacked log-mel,
    ``config.model.logmel``; causal for the objectives that need it, APC / VQ-APC, bidirectional
    otherwise) or ``"conv"`` (the wav2vec2 family of ``config.model.hf_config``; masked only)."""
    m, obj = config.model, table1.objective(config.objective)
    if m.backbone == "logmel":
        return models.MelBackbone(models.lmt.MelArch(causal=obj.causal, **dict(m.logmel)), dropout=m.dropout)
    if m.backbone != "conv":
        raise ValueError(f"config.model.backbone={m.backbone!r}: expected one of {BACKBONES}")
    if obj.causal:
        raise ValueError(f"config.model.backbone='conv' with objective {obj.name!r}: it trains the "
                         f"causal log-mel backbone; expected model.backbone='logmel'")
    return models.ConvBackbone(json.dumps(dict(m.hf_config), sort_keys=True))


def build_task(config, corpus, sets, out_dir: Path, centroids=None):
    """The task of ``config.objective`` (:mod:`speechmi_jax.ssl.table1`; HuBERT fits its cluster
    targets, or assigns the given ``centroids`` [K, D])."""
    ctx = registry.Context(corpus=corpus, sets=sets, out_dir=out_dir, centroids=centroids)
    return table1.objective(config.objective).build(config, backbone(config), ctx)


def optimizer(o: dict) -> optax.GradientTransformation:
    """AdamW's direction with a unit learning rate: clip, Adam, decoupled weight decay, negate.

    The step size (member lr x :func:`lr_schedule`) multiplies the updates in the train step, so
    the learning rate and the step counts are traced values a population can vary.
    """
    return optax.chain(optax.clip_by_global_norm(o["clip_norm"]),
                       optax.scale_by_adam(o["b1"], o["b2"], o["eps"]),
                       optax.add_decayed_weights(o["weight_decay"]),
                       optax.scale(-1.0))


def lr_schedule(step, warmup, total, final_fraction: float):
    """Linear warm-up from 0 over ``warmup`` steps, then cosine decay from 1 to ``final_fraction``
    at ``total`` (optax's ``warmup_cosine_decay_schedule``, with traceable step counts)."""
    step = step.astype(jnp.float32)
    warm = step / jnp.maximum(warmup, 1)
    progress = jnp.clip((step - warmup) / jnp.maximum(total - warmup, 1), 0.0, 1.0)
    decay = final_fraction + (1.0 - final_fraction) * 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.where(step < warmup, warm, decay)


def hyperparameters(members, config, task):
    """The traced values of a step, one per member [P]: the population's and the schedule's,
    and the task's fitted constants (HuBERT's ``h_target_bits``), which vary between runs of
    one shape and so must not key the compiled step (:func:`compiled`)."""
    p = len(members)
    return {"warmup": jnp.full((p,), config.optim.warmup_steps, jnp.int32),
            "h_target_bits": jnp.full((p,), getattr(task, "h_target_bits", 0.0), jnp.float32),
            "total": jnp.full((p,), config.steps, jnp.int32),
            "lr": jnp.asarray([m["lr"] for m in members], jnp.float32),
            "mask_prob": jnp.asarray([m["mask_prob"] for m in members], jnp.float32),
            "shift": jnp.asarray([m["shift"] for m in members], jnp.int32),
            "past_weight": jnp.asarray([m["past_weight"] for m in members], jnp.float32)}


@functools.lru_cache(maxsize=16)
def compiled(task, optim: tuple, mesh_shape: tuple[int, int]):
    """Jitted (init, train_step, evaluate) of :func:`make_functions`, cached per task, optimiser
    and mesh so that runs of one shape in a process compile once (step counts are traced, not
    static). optim: sorted ``config.optim`` items; mesh_shape: (member, data) device counts."""
    tx = optimizer(dict(optim))
    init, step_fn, eval_fn = make_functions(task, tx, dict(optim)["final_lr_fraction"])
    members = NamedSharding(make_mesh(*mesh_shape), PS("member"))
    return (jax.jit(init, out_shardings=members),
            jax.jit(step_fn, out_shardings=(members, members), donate_argnums=(0,)),
            jax.jit(eval_fn, out_shardings=members))


def mesh_shape(num_members: int, batch_size: int, num_devices: int) -> tuple[int, int]:
    """(member, data) device counts: members spread over gcd(P, devices) devices, each member's
    batch over gcd(B, the rest)."""
    m = math.gcd(num_members, num_devices)
    return m, math.gcd(batch_size, num_devices // m)


def make_mesh(members: int, data: int):
    """The ("member", "data") mesh over the first members x data devices."""
    return training.make_mesh(("member", "data"), (members, data), training.default_devices()[:members * data])


def make_functions(task, tx, final_lr_fraction: float):
    """(init [P keys] -> state, train_step(state, batch, hp), evaluate(state, batch, hp)), pure."""

    def init_one(key):
        params, aux = task.init(key)
        return {"params": params, "opt_state": tx.init(params), "aux": aux, "key": key,
                "step": jnp.zeros((), jnp.int32)}

    def step_one(st, batch, hp):
        key = jax.random.fold_in(st["key"], st["step"])
        (_, m), grads = jax.value_and_grad(task.loss, has_aux=True)(st["params"], st["aux"], batch,
                                                                    key, hp, True)
        updates, opt_state = tx.update(grads, st["opt_state"], st["params"])
        lr = hp["lr"] * lr_schedule(st["step"], hp["warmup"], hp["total"], final_lr_fraction)
        updates = jax.tree.map(lambda u: u * lr, updates)
        params = optax.apply_updates(st["params"], updates)
        aux = task.after_step(params, st["aux"], hp)
        return {"params": params, "opt_state": opt_state, "aux": aux, "key": st["key"],
                "step": st["step"] + 1}, m

    def eval_one(st, batch, hp):
        key = jax.random.fold_in(st["key"], EVAL_FOLD)
        return task.loss(st["params"], st["aux"], batch, key, hp, False)[1]

    init = jax.vmap(init_one)
    step = jax.vmap(step_one, in_axes=(0, None, 0))
    evaluate = jax.vmap(eval_one, in_axes=(0, None, 0))
    return init, step, evaluate


# ----------------------------------------------------------------------------- checkpoints + metrics

def _member_dir(out_dir: Path, i: int, p: int) -> Path:
    return out_dir if p == 1 else out_dir / f"member-{i}"


def _slice(state, i):
    return jax.tree.map(lambda x: x[i], state)


def _restore(stores, state, sharding):
    """Newest step saved in good order by every member -> (stacked state, step) or (state, 0)."""
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape[1:], x.dtype, sharding=sharding), state)
    restored, step = training.restore_latest(stores, abstract)
    if restored is None:
        return state, 0
    return jax.tree.map(lambda *xs: jnp.stack(xs), *restored), step


def read_metrics(path) -> list[dict]:
    """The records of a ``metrics.jsonl`` (a member's curve), in order."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line]


def _truncate_metrics(path: Path, step: int):
    """Drops the records after ``step`` (all of them for a fresh start): the replay rewrites them."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines()
            if line and step and json.loads(line)["step"] <= step]
    path.write_text("".join(line + "\n" for line in keep))


def _mean(records: list[dict], weights=None) -> dict:
    return ({k: float(np.average([r[k] for r in records], weights=weights)) for k in records[0]}
            if records else {})


_PENDING = "pending_metrics.json"


def _save_pending(member_dir: Path, step: int, records: list[dict]):
    """The train metrics since the last record, for a run stopped at ``step`` between two."""
    (member_dir / _PENDING).write_text(json.dumps({"step": step, "records": records}))


def _pending(member_dir: Path, start: int) -> list[dict]:
    """The saved train metrics of a run resumed at ``start`` (none unless it stopped there)."""
    path = member_dir / _PENDING
    doc = json.loads(path.read_text()) if path.exists() else {}
    return list(doc["records"]) if start and doc.get("step") == start else []


# ----------------------------------------------------------------------------- the loop

def pretrain(config, out_dir, *, progress: bool = True, wait: bool = False) -> list[dict]:
    """Trains the population of ``config``; returns each member's last metrics record.

    The config is checked first (nothing is written for a refused one); the run folder is then
    held against a second writer (``wait``: wait for it instead of failing, ``rundir.claim``)
    and SIGINT / SIGTERM stop at the next step boundary (``interrupt.py``)."""
    validate_config(config)
    with rundir.claim(out_dir, wait=wait):
        training.use_compilation_cache()
        return _pretrain(config, Path(out_dir), progress)


def _run_identity(config, out_dir: Path) -> tuple[dict, Path, str]:
    """(the config as JSON, where it is kept, its text there); a folder holding another
    config's run is refused. A run started before a config key existed resumes when this
    config gives that key its default (a new key's default keeps the old behaviour): the run
    keeps the config it was started with as its identity, which its checkpoints carry."""
    ident_path = out_dir / "pretrain_config.json"
    text = json.dumps(json.loads(config.to_json()), indent=2, sort_keys=True) + "\n"
    text = rundir.resumed_config(ident_path, text, base_config().to_json())
    distributed.on_main(lambda: rundir.check_config(ident_path, text), f"checking {ident_path}")
    return json.loads(text), ident_path, text


def _batches(config, sets, task):
    """(step -> the training batch of that step, the fixed dev batches) of crops that are a
    whole number of the backbone's frames."""
    crop = int(round(config.crop_seconds * 16000)) // task.frame_hop * task.frame_hop
    code_frames = int(task.backbone.num_frames(np.asarray(crop))) if task.has_codes else 0
    batch_of = lambda step: data_lib.train_batch(sets["train"], config.seed, step, config.batch_size, crop,
                                                 task.frame_hop, code_frames, config.telephone_prob)
    dev = data_lib.dev_batches(sets["dev"], config.batch_size, crop, task.frame_hop, code_frames,
                               config.max_dev_batches)
    return batch_of, dev


def checkpoint_store(member_dir: Path, identity: dict, member: int, keep: int):
    """Member ``member``'s checkpoint store (``<member_dir>/checkpoints/``, the newest ``keep``
    kept; the state is the item ``default``, and steps saved before stores kept a record
    resume); ``identity``: the run's config as stored in ``pretrain_config.json``."""
    return training.CheckpointStore(Path(member_dir) / "checkpoints",
                                    {"run": identity, "member": member}, keep, item="default",
                                    unrecorded_ok=True)


def _member_record(task, config, members, i: int, done: int, pending: list, dev_m,
                   dev_rows) -> dict:
    """Member ``i``'s metrics record at step ``done``: its hyperparameters, the mean train
    metrics since the last record, the dev metrics (row-weighted), the collapse flag."""
    rec = {"step": done, "member": i, **{k: members[i][k] for k in HP_KEYS}}
    rec.update({f"train_{k}": v for k, v in _mean(pending).items()})
    rec.update({f"dev_{k}": v for k, v in
                _mean([{k: float(v[i]) for k, v in dm.items()} for dm in dev_m],
                      dev_rows).items()})
    rec["collapse"] = _collapse_guard(task, config, rec)
    return rec


def _progress_bar(config, start: int):
    """A tqdm bar over the run's steps, from ``start``."""
    from tqdm.auto import tqdm
    return tqdm(total=config.steps, initial=start, desc=f"pretrain {config.objective}", unit="step")


def _close_all(bar, stores, writers) -> None:
    """Closes the progress bar, waits for and closes the checkpoint stores, the event files."""
    if bar is not None:
        bar.close()
    for store in stores:
        store.close()
    for w in writers:
        w.close()


def _pretrain(config, out_dir: Path, progress: bool) -> list[dict]:
    members = population(config)
    p = len(members)
    export_steps = set(config.export_steps)
    identity, ident_path, ident_text = _run_identity(config, out_dir)

    corpus = load_corpus(config.corpus)
    sets = {"train": data_lib.load_split(corpus, config.train_split, config.max_utterances),
            "dev": data_lib.load_split(corpus, config.dev_split, config.max_dev_utterances)}
    task = build_task(config, corpus, sets, out_dir)
    # Written once the corpus and the targets load: a run refused before this point leaves the
    # folder free for the corrected command.
    if distributed.is_main():
        rundir.write_config(ident_path, ident_text)
    batch_of, dev = _batches(config, sets, task)

    shape = mesh_shape(p, config.batch_size, len(training.default_devices()))
    mesh = make_mesh(*shape)
    data_sh, rep = NamedSharding(mesh, PS("data")), NamedSharding(mesh, PS("member"))
    put_batch = lambda b: jax.tree.map(lambda x: distributed.put(x, data_sh), b)
    dev_rows = [int(np.count_nonzero(b["lengths"])) for b in dev]  # a last batch may be partial
    dev = [put_batch(b) for b in dev]

    optim = tuple(sorted((k, v) for k, v in config.optim.to_dict().items() if k != "warmup_steps"))
    init_jit, step_jit, eval_jit = compiled(task, optim, shape)
    hp = jax.tree.map(lambda x: distributed.put(x, rep), hyperparameters(members, config, task))
    keys = np.stack([np.asarray(jax.random.PRNGKey(m["seed"])) for m in members])
    state = init_jit(distributed.put(keys, rep))

    dirs = [_member_dir(out_dir, i, p) for i in range(p)]
    stores = [checkpoint_store(d, identity, i, config.keep_checkpoints) for i, d in enumerate(dirs)]
    state, start = _restore(stores, state, NamedSharding(mesh, PS()))
    state = jax.device_put(state, rep)
    main = distributed.is_main()
    for d in dirs if main else ():
        _truncate_metrics(d / "metrics.jsonl", start)
    writers = [EventWriter(d, purge_step=start) for d in dirs] if main else []
    if start:
        log.info("%s: resumed from step %d", out_dir, start)
    pending: list[list[dict]] = [_pending(d, start) for d in dirs]

    bar = _progress_bar(config, start) if progress and main else None
    last: list[dict] = [{} for _ in members]

    def evaluate(done):
        dev_m = [distributed.to_host(eval_jit(state, b, hp)) for b in dev]
        for i in range(p):
            rec = _member_record(task, config, members, i, done, pending[i], dev_m, dev_rows)
            if main:
                with open(dirs[i] / "metrics.jsonl", "a") as f:
                    f.write(json.dumps(rec) + "\n")
                writers[i].write(rec)
            last[i] = rec
            pending[i] = []

    try:
        if start == 0:
            evaluate(0)  # the untrained model: the reference for "training lowered the dev loss"
        for step in range(start, config.steps):
            state, m = step_jit(state, put_batch(batch_of(step)), hp)
            m = distributed.to_host(m)
            for i in range(p):
                pending[i].append({k: float(v[i]) for k, v in m.items()})
            done = step + 1
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{m['loss'][0]:.4f}", bound=f"{m['bound_bits'][0]:.3f}b")
            if done % config.eval_every == 0 or done == config.steps:
                evaluate(done)
            stop = interrupt.requested_anywhere()  # SIGINT / SIGTERM: save this step, then stop
            scheduled = done % config.checkpoint_every == 0 or done == config.steps
            if scheduled or stop:
                _save_members(stores, state, done, dirs, None if scheduled or not main else pending)
            if done in export_steps:
                _export(task, state, [d / "models" / f"step{done}" for d in dirs])
            if done < config.steps:
                interrupt.check_all(f"step {done} of {config.steps}", stop)
    finally:
        _close_all(bar, stores, writers)
    _export(task, state, [d / "model" for d in dirs])
    return last


def _save_members(stores, state, step: int, dirs, pending=None) -> None:
    """Each member's checkpoint at ``step``; with ``pending`` (a stop between records), also
    the train metrics each member gathered since its last record."""
    for i, store in enumerate(stores):
        store.save(step, _slice(state, i))
        if pending is not None:
            _save_pending(dirs[i], step, pending[i])


def _export(task, state, folders: list[Path]):
    """Each member's encoder into its folder (gathered on every process, written by process 0)."""
    for i, folder in enumerate(folders):
        params = distributed.to_host(_slice(state["params"], i))
        if distributed.is_main():
            task.export(params, folder)


def _collapse_guard(task, config, rec: dict) -> bool:
    """Warns and returns True when, after the warm-up, a learned target's or codebook's dev proxy
    (data2vec: target variance, wav2vec 2.0 and VQ-APC: codebook perplexity) is under its
    ``config.collapse`` threshold."""
    metric = getattr(task, "collapse_metric", None)
    if metric is None or rec["step"] < config.optim.warmup_steps:
        return False
    value, thr = rec[f"dev_{metric}"], config.collapse[f"min_{metric}"]
    if value >= thr:
        return False
    what, thing = {"target_var": ("target variance", "the learned target"),
                   "perplexity": ("codebook perplexity", "the codebook")}[metric]
    warnings.warn(
        f"{config.objective} member {rec['member']} (seed {rec['seed']}, lr {rec['lr']}) at step "
        f"{rec['step']}: {thing} is collapsing: dev {what} {value:.3g} < "
        f"{thr:g}, H(Z_target) proxy {rec['dev_h_target_bits']:.2f} bits, bound "
        f"{rec['dev_bound_bits']:.3f} bits", CollapseWarning, stacklevel=3)
    return True


def load_pretrain_config(config: str | Path, overrides=(), smoke: bool = False):
    """A pretraining config by path or bundled name (``configs/pretrain/<name>.py``, or
    ``zoo/<name>`` for the zoo's recipes in ``configs/zoo/``), its
    ``--set`` overrides applied and checked by :func:`validate_config` -> (path, config)."""
    path = Path(config)
    configs = Path(__file__).parents[1] / "configs"
    for bundled in (configs / "pretrain" / f"{config}.py", configs / f"{config}.py"):
        if not path.is_file() and bundled.is_file():
            path = bundled
    return path, loader.load_config(path, overrides, arg=config_arg.from_flag(smoke),
                                    schema=validate_config)


def pretrain_command(config: str, out: str | None, smoke: bool, overrides, wait: bool = False) -> int:
    """``speechmi pretrain``: a config path or a bundled name (apc, vqapc, hubert, data2vec)."""
    path, cfg = load_pretrain_config(config, overrides, smoke)
    out_dir = Path(out or Path("runs") / f"pretrain-{path.stem}")
    last = pretrain(cfg, out_dir, wait=wait)
    for rec in last:
        print(f"member {rec['member']}: step {rec['step']} dev loss {rec['dev_loss']:.4f}, "
              f"H(Z_target) {rec['dev_h_target_bits']:.3f} bits, bound {rec['dev_bound_bits']:.3f} bits")
    print(f"model, checkpoints and metrics.jsonl in {out_dir}/")
    return 0
