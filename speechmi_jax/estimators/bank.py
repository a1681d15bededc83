"""Banks of small estimators: every layer x every hyper-parameter setting in one jitted step.

A *problem* (a linear probe, an InfoNCE critic, a CTC head, ...) is four pure functions of one
estimator's parameters and one layer's data:

    init(key, in_dims)        -> params
    loss(params, batch)       -> scalar, the mean training loss of a batch (weighted by batch["w"])
    evaluate(params, data)    -> {"loss": [n], ...} per-item held-out quantities

The bank stacks parameters with leading axes ``[L, P]`` (layers x grid points, a grid point being a
(learning rate, l2, seed) triple) and trains them all in one step: ``vmap`` over P shares the
layer's features between its P estimators (so XLA fuses them into one wider matmul), ``vmap`` over L
gives a batched matmul over layers (and, for a problem with a sequential kernel such as CTC's
recursion, one loop over time for all layers instead of one per layer: BENCHMARKS.md,
"Linear-CTC bank"). Nothing here loops over layers or grid points in Python.

Data is a dict of arrays whose item axis is N; the fields named in ``layer_fields`` carry a leading
layer axis ``[L, N, ...]``, the others are shared by all layers ``[N, ...]``. Every data dict has a
weight field ``w [N]``: 0 on padding, else the item's weight in the mean held-out loss (1, or e.g.
a CTC utterance's reference length).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

OPTIMIZERS = ("adam", "lbfgs")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One kind of estimator (see the module docstring for the function contracts)."""

    name: str
    init: Callable[..., Any]
    loss: Callable[[Any, dict], jax.Array]
    evaluate: Callable[[Any, dict], dict]
    layer_fields: tuple[str, ...]
    config: tuple = ()  # hashable description of the architecture, part of checkpoint identity
    # Whether the initial parameters are a dev candidate: yes for a probe (the label prior), no
    # for a critic whose init is a constant score (bound exactly 0, however broken training is).
    step0_candidate: bool = True
    # The minibatch sampler, draw(key, step, n_train, batch_size) -> item indices [batch_size]
    # (a deterministic function of key and step, so resume replays it); None: epoch_indices.
    draw: Callable[..., jax.Array] | None = None
    # Whether a minibatch is split over the "data" devices; False: every device computes all of
    # it (for a loss that slices the minibatch in ways the split would cut across devices).
    shard_minibatch: bool = True


@dataclasses.dataclass(frozen=True)
class Grid:
    """Hyper-parameter grid flattened to P points: the product learning_rates x l2 x seeds."""

    lr: tuple[float, ...]
    l2: tuple[float, ...]
    seed: tuple[int, ...]

    @classmethod
    def product(cls, learning_rates, l2=(0.0,), seeds=(0,)) -> "Grid":
        points = list(itertools.product(learning_rates, l2, seeds))
        if not points:
            raise ValueError("grid is empty: learning_rates, l2 and seeds must each be non-empty")
        lr, l2_, seed = zip(*points)
        return cls(tuple(map(float, lr)), tuple(map(float, l2_)), tuple(map(int, seed)))

    @property
    def size(self) -> int:
        return len(self.lr)

    def arrays(self) -> dict:
        return {
            "lr": jnp.asarray(self.lr, jnp.float32),
            "l2": jnp.asarray(self.l2, jnp.float32),
            "seed": jnp.asarray(self.seed, jnp.uint32),
        }

    def point(self, p: int) -> dict:
        return {"lr": self.lr[p], "l2": self.l2[p], "seed": self.seed[p]}


def _l2_penalty(params) -> jax.Array:
    """0.5 * sum of squared weights of every matrix (ndim >= 2) in the pytree; biases are free."""
    leaves = [x for x in jax.tree.leaves(params) if x.ndim >= 2]
    return 0.5 * sum(jnp.sum(jnp.square(x)) for x in leaves)


def _objective(problem: Problem, hp: dict, batch: dict):
    return lambda q: problem.loss(q, batch) + hp["l2"] * _l2_penalty(q)


def _optimizer(name: str):
    if name == "adam":
        return optax.scale_by_adam()
    if name == "lbfgs":
        # A backtracking (Armijo) line search: a much smaller program than optax's default zoom
        # search (it compiles faster under the bank's two vmaps) and as good on these smooth
        # convex losses, where the unit quasi-Newton step is nearly always accepted.
        # rtol: once an estimator has converged, float32 rounding makes every step fail the exact
        # sufficient-decrease test, and under vmap one such estimator kept the whole bank
        # backtracking 20 evaluations per step; a relative slack of 1e-6 in the loss (~8 float32
        # ulps) accepts those steps. Measured cost of both: BENCHMARKS.md, "Estimator bank".
        return optax.lbfgs(
            linesearch=optax.scale_by_backtracking_linesearch(max_backtracking_steps=20, rtol=1e-6,
                                                              store_grad=True)
        )
    raise ValueError(f"optimizer={name!r}: expected one of {OPTIMIZERS}")


def he_normal(key, d_in: int, d_out: int) -> jax.Array:
    """He-initialised weight [d_in, d_out] ~ N(0, 2 / d_in), float32. The barriers keep XLA from
    folding the scale into the normal's own constant or into a later one (``w * sqrt(0.5)``), so
    an initialisation has the same bits compiled whole (``init_state``) as run op by op."""
    w = jax.lax.optimization_barrier(jax.random.normal(key, (d_in, d_out), jnp.float32))
    return jax.lax.optimization_barrier(w * jnp.sqrt(2.0 / d_in))


def _init_one(problem: Problem, optimizer: str, layer: jax.Array, hp: dict, in_dims, key):
    """Initial params and optimizer state of the estimator at (layer, grid point)."""
    k = jax.random.fold_in(jax.random.fold_in(key, hp["seed"]), layer)
    params = problem.init(k, in_dims)
    return params, _optimizer(optimizer).init(params)


def init_bank(problem: Problem, optimizer: str, grid: Grid, num_layers: int, in_dims, key,
              layer_ids=None):
    """Stacked params and optimizer state with leading axes [L, P].

    ``key`` is a raw uint32 PRNG key; estimator (l, p) is initialised from
    fold_in(fold_in(key, seed_p), layer_ids[l]) (layer_ids default 0..L-1), so the same seed
    gives the same init whatever the grid, and a layer the same init in any chunk of layers.
    """
    one = lambda layer, hp: _init_one(problem, optimizer, layer, hp, in_dims, key)
    over_p = jax.vmap(one, in_axes=(None, 0))
    over_lp = jax.vmap(over_p, in_axes=(0, None))
    layers = jnp.arange(num_layers) if layer_ids is None else jnp.asarray(layer_ids, jnp.int32)
    return over_lp(layers, grid.arrays())


def _step_one(problem: Problem, optimizer: str, params, opt_state, hp: dict, batch: dict):
    """One optimisation step of one estimator on one layer's batch."""
    f = _objective(problem, hp, batch)
    opt = _optimizer(optimizer)
    if optimizer == "adam":
        value, grad = jax.value_and_grad(f)(params)
        updates, opt_state = opt.update(grad, opt_state)
        params = jax.tree.map(lambda p, u: p - hp["lr"] * u, params, updates)
    else:
        value, grad = optax.value_and_grad_from_state(f)(params, state=opt_state)
        updates, opt_state = opt.update(
            grad, opt_state, params, value=value, grad=grad, value_fn=f
        )
        params = optax.apply_updates(params, updates)
    return params, opt_state, value


def over_layers(fn: Callable, per_layer: tuple, data: dict, layer_fields: tuple):
    """fn(*per_layer[l], data_l) for every layer l, vmapped and stacked on a leading L axis.
    per_layer: pytrees with leading axis L; data_l: data with the layer fields' row l."""
    layered = {k: v for k, v in data.items() if k in layer_fields}
    shared = {k: v for k, v in data.items() if k not in layer_fields}
    return jax.vmap(lambda p, d: fn(*p, {**shared, **d}))(per_layer, layered)


def bank_step(problem: Problem, optimizer: str, params, opt_state, hp: dict, batch: dict):
    """One step of the whole bank: params/opt_state [L, P, ...], hp [P], batch per module docs.
    Returns (params, opt_state, training objective [L, P])."""
    one = lambda pr, st, h, b: _step_one(problem, optimizer, pr, st, h, b)
    over_p = jax.vmap(one, in_axes=(0, 0, 0, None))
    return over_layers(lambda pr, st, b: over_p(pr, st, hp, b), (params, opt_state), batch,
                       problem.layer_fields)


def bank_evaluate(problem: Problem, params, data: dict) -> dict:
    """Per-item held-out quantities of every estimator: {name: [L, P, N]}."""
    over_p = jax.vmap(problem.evaluate, in_axes=(0, None))
    return over_layers(over_p, (params,), data, problem.layer_fields)


def weighted_mean_loss(items: dict, w: jax.Array) -> jax.Array:
    """Mean of items["loss"] [..., N] over real items (weights w [N])."""
    return jnp.sum(items["loss"] * w, axis=-1) / jnp.sum(w)


def select_batch(problem: Problem, data: dict, idx: jax.Array) -> dict:
    """Rows idx [B] of every field (axis 1 for layer fields, axis 0 otherwise)."""
    return {
        k: jnp.take(v, idx, axis=1 if k in problem.layer_fields else 0) for k, v in data.items()
    }


def epoch_indices(key: jax.Array, step: jax.Array, n_real: int, batch_size: int) -> jax.Array:
    """Indices of the minibatch at `step`: slices of a fresh permutation of the real items per
    epoch (no item twice in an epoch; a deterministic function of (key, step), so a resumed run
    draws exactly the batches an uninterrupted one would)."""
    per_epoch = max(n_real // batch_size, 1)
    epoch, pos = step // per_epoch, step % per_epoch
    perm = jax.random.permutation(jax.random.fold_in(key, epoch), n_real)
    return jax.lax.dynamic_slice(perm, (pos * batch_size,), (batch_size,))


def init_state(problem: Problem, optimizer: str, grid: Grid, num_layers: int, in_dims, seed: int,
               layer_ids=None):
    """The whole trainable state of a bank, one pytree (what a checkpoint holds). One compiled
    program (run op by op, its few dozen small operations each compiled for every new shape)."""
    ids = np.arange(num_layers) if layer_ids is None else np.asarray(layer_ids)
    return _init_state_jit(problem, optimizer, grid, in_dims, seed, ids.astype(np.int32))


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 3, 4))
def _init_state_jit(problem: Problem, optimizer: str, grid: Grid, in_dims, seed: int, layer_ids):
    key = jax.random.key_data(jax.random.key(seed))
    params, opt_state = init_bank(problem, optimizer, grid, layer_ids.shape[0], in_dims, key,
                                  layer_ids)
    shape = (layer_ids.shape[0], grid.size)
    return {
        "params": params,
        "opt": opt_state,
        "best_params": jax.tree.map(jnp.copy, params),  # own buffers: the state is donated
        "best_loss": jnp.full(shape, jnp.inf, jnp.float32),
        "best_step": jnp.zeros(shape, jnp.int32),
        "step": jnp.zeros((), jnp.int32),
        "key": key,
    }


def update_best(problem: Problem, state: dict, dev: dict) -> dict:
    """Measures every estimator's mean dev loss at the current step and updates the best-so-far
    snapshot. A NaN dev loss (a diverged learning rate) never counts as an improvement."""
    dev_loss = weighted_mean_loss(bank_evaluate(problem, state["params"], dev), dev["w"])
    better = dev_loss < state["best_loss"]  # [L, P]; False on NaN
    if not problem.step0_candidate:
        better = better & (state["step"] > 0)

    def keep(new, old):
        mask = better.reshape(better.shape + (1,) * (new.ndim - 2))
        return jnp.where(mask, new, old)

    return {
        **state,
        "best_params": jax.tree.map(keep, state["params"], state["best_params"]),
        "best_loss": jnp.where(better, dev_loss, state["best_loss"]),
        "best_step": jnp.where(better, state["step"], state["best_step"]),
    }


def train_chunk(
    problem: Problem,
    optimizer: str,
    batch_size: int | None,
    n_train: int,
    n_steps: int,
    state: dict,
    hp: dict,
    train: dict,
    dev: dict,
    constrain_batch: Callable[[dict], dict] = lambda b: b,
) -> dict:
    """One dev evaluation of the current parameters (see `update_best`), then `n_steps` steps.

    The estimator's initial value counts as a candidate (step 0) when `problem.step0_candidate`:
    for a probe it is the training label prior, so a layer with nothing to offer is not reported
    below what the prior achieves.
    batch_size None means full batch (all of `train`, padding weighted 0). `constrain_batch` may
    pin the minibatch's sharding (the trainer shards it over the "data" mesh axis). The caller
    evaluates once more after the last chunk.
    """
    state = update_best(problem, state, dev)

    def body(_, st):
        if batch_size is None:
            batch = train
        else:
            idx = (problem.draw or epoch_indices)(st["key"], st["step"], n_train, batch_size)
            batch = constrain_batch(select_batch(problem, train, idx))
        params, opt, _ = bank_step(problem, optimizer, st["params"], st["opt"], hp, batch)
        return {**st, "params": params, "opt": opt, "step": st["step"] + 1}

    return jax.lax.fori_loop(0, n_steps, body, state)


def chosen_params(state: dict) -> tuple[Any, jax.Array]:
    """Best snapshot of the grid point with the lowest dev loss, per layer: (params [L, ...], p [L])."""
    choice = jnp.argmin(state["best_loss"], axis=1)
    take = lambda x: jax.vmap(lambda xl, c: xl[c])(x, choice)
    return jax.tree.map(take, state["best_params"]), choice
