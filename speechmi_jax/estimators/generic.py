"""The generic MI estimator: InfoNCE with marginal Gaussianisation, cross-fitting and one block.

    estimate_mi(x_train, y_train, x_test, y_test, **options)          -> MIEstimate
    estimate_mi_bank([x_train], [y_train], [x_test], [y_test], **options) -> [MIEstimate]
    infonce_same_utterance_bank(a [L, N, Da], b [L, N, Db], groups, split) -> [MIEstimate] * L
      (negatives from the query's own utterance: blocks of `views.utterance_blocks`)

What it does, each step chosen by measurement on the known-MI tasks of `tasks.py`
(BENCHMARKS.md, "Generic MI estimator on known-MI tasks"):

1. Marginal Gaussianisation: every coordinate of X (and of Y) is replaced by the normal score of
   its rank among all of that coordinate's values (train and test pooled; the pairing of x with
   y is never used). A strictly increasing map of each coordinate is an invertible map of X, so
   I(X; Y) is unchanged; heavy tails (Student-t, half-cube) stop dominating the critic's inputs.
2. Cross-fitting: one critic trains on the training half (a `dev_fraction` of it held out for
   early stopping and the learning-rate choice) and is scored on the test half, another trains on
   the test half and is scored on the training half. Every item is held out once; the figure
   is the mean over both folds (and over `replicas` critics per fold, differing in init).
3. Canonical coordinates and a Gaussian critic: each fold's X and Y are rotated to the canonical
   (CCA) coordinates of its training pairs (an invertible linear map of each view), where the log
   density ratio of a Gaussian is diagonal; that closed-form Gaussian critic, from the training
   pairs' canonical correlations, is added to the trained critic (`residual_problem`), which
   starts at zero and learns the non-Gaussian rest. Each view also gets its mean square as one
   more coordinate (`with_sq_norm`, injective), the quantity radial dependence (Student-t) and
   radius-driven maps (spirals) turn on.
4. One block: the held-out bound is InfoNCE with *all* held-out pairs of a fold as candidates,
   log K - L_NCE with K = that fold's size. The bound holds for any critic and any K (Poole et al.
   2019); its gap below I shrinks as K grows, so evaluating with one block of all pairs makes it
   tighter than blocks of the training K at no risk of exceeding I in expectation.

The reported figure is therefore an InfoNCE lower bound on I(X; Y) in expectation, measured on
pairs the critic never saw, capped by log K (NWJ and SMILE estimates, by contrast, are not lower
bounds in this sense: SMILE's clipping biases it either way, NWJ's held-out value has unbounded
variance). Critics are `infonce.py`'s, trained
with the bank machinery (`fit_bank`): every (task, fold, replica) is one "layer" of one bank and
the learning rates are its grid, so a list of tasks trains in one vmapped, jitted step (tasks of
different dimensions are zero-padded: a constant coordinate carries no information).
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
from scipy import special

from speechmi_jax import distributed
from speechmi_jax.estimators import bootstrap, validate
from speechmi_jax.estimators.views import utterance_blocks
from speechmi_jax.estimators.api import (MIEstimate, dev_from_train, estimate_from_nats, hyper_grid,
                                         load_rows, resolve_train_config, split_codes,
                                         standardize_splits)
from speechmi_jax.estimators.bank import Problem
from speechmi_jax.estimators.infonce import CRITICS, critic_scores, infonce_problem, nce_losses
from speechmi_jax.estimators.train import DEFAULT_RESIDENT_BYTES, fit_bank, fit_layer_chunks


def gaussianize(*parts: np.ndarray) -> list[np.ndarray]:
    """Normal scores of the pooled per-coordinate ranks of parts [n_i, D] (ties averaged); a
    strictly increasing map per coordinate. Constant coordinates become 0."""
    from scipy import stats  # ~0.5 s to import: only where used

    x = np.concatenate(parts).astype(np.float64)
    ranks = stats.rankdata(x, axis=0)
    z = special.ndtri((ranks - 0.5) / x.shape[0])
    z[:, np.ptp(x, axis=0) == 0] = 0.0
    cuts = np.cumsum([p.shape[0] for p in parts])[:-1]
    return [p.astype(np.float32) for p in np.split(z, cuts)]


def cca_rotation(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3):
    """Invertible linear maps (Rx [Dx, Dx], Ry [Dy, Dy]) to canonical coordinates fitted on pairs
    x [n, Dx], y [n, Dy]: x @ Rx and y @ Ry have identity covariances and their cross-covariance
    is diagonal (the canonical correlations, descending) on the first min(Dx, Dy) coordinates."""
    x = x - x.mean(0)
    y = y - y.mean(0)
    n = x.shape[0]

    def inv_sqrt(c):
        w, v = np.linalg.eigh(c + ridge * np.eye(len(c)))
        return (v / np.sqrt(w)) @ v.T

    wx, wy = inv_sqrt(x.T @ x / n), inv_sqrt(y.T @ y / n)
    u, _, vt = np.linalg.svd(wx @ (x.T @ y / n) @ wy)
    return wx @ u, wy @ vt.T


def gaussian_offset(u_fit, v_fit, u, v):
    """The Gaussian critic in canonical coordinates, as per-item features: (ga [n, m], q [n]) with
    s_G(u_i, v_j) = ga_i . v_j[:m] + q_j the log density ratio log p(v_j | u_i) / p(v_j) (up to
    terms in u_i alone) of the Gaussian with canonical correlations rho [m]:
    ga = u * rho / (1 - rho^2), q = -sum rho^2 v^2 / (2 (1 - rho^2)).

    rho: the canonical correlations of (u_fit [n, Du], v_fit [n, Dv]), set to 0 below the upper
    edge of their null distribution, (sqrt(p (1 - r)) + sqrt(r (1 - p)))^2 for rho^2 with
    p = Du / n, r = Dv / n (Wachter 1980): sample canonical correlations of independent
    coordinates reach it, and a critic built on them loses that much on held-out pairs (0.16
    nats on the 25 x 25 task)."""
    n, du = u_fit.shape
    dv = v_fit.shape[1]
    m = min(du, dv)
    rho = np.clip(np.mean(u_fit[:, :m] * v_fit[:, :m], axis=0), 0.0, 0.999)
    p, r = du / n, dv / n
    edge = (np.sqrt(p * (1 - r)) + np.sqrt(r * (1 - p))) ** 2
    rho = np.where(rho**2 > edge, rho, 0.0)
    ga = (u[:, :m] * (rho / (1 - rho**2))).astype(np.float32)
    q = (-0.5 * np.sum(rho**2 / (1 - rho**2) * np.square(v[:, :m]), axis=1)).astype(np.float32)
    return ga, q


def with_sq_norm(x: np.ndarray) -> np.ndarray:
    """x [n, D] -> [n, D + 1], the last column the centred mean square |x|^2 / D - 1 (an injective
    map of x, so I is unchanged): radial dependence (Student-t) and radius-driven maps (the
    spiral) become one coordinate away for the critic."""
    return np.concatenate([x, np.mean(np.square(x), axis=1, keepdims=True) - 1.0], axis=1)


@functools.lru_cache(maxsize=None)
def residual_problem(kind: str, k: int, hidden: int, embed: int) -> Problem:
    """InfoNCE critic s = s_G + s_theta: the fixed Gaussian critic of each pair's features
    ("ga" [N, m], "q" [N], see `gaussian_offset`) plus a trained `infonce.py` critic (zero at
    initialisation; step 0, the Gaussian critic alone, is no dev candidate: where no canonical
    correlation clears the null edge it is the constant critic, whose bound is 0 by
    construction, so every reported figure comes from a trained critic). Trained on blocks of k pairs;
    evaluated with every real pair as one block: per-item loss [N] is -log softmax over the real
    candidates (weight-0 items, data["mask"] = 0, are no candidates and get loss 0)."""
    base = infonce_problem(kind, k, hidden, embed)

    def scores(params, d):
        m = d["ga"].shape[-1]
        return critic_scores(params, d["a"], d["b"], kind) + d["ga"] @ d["b"][:, :m].T + d["q"][None, :]

    def loss(params, batch):
        return jnp.mean(nce_losses(scores(params, batch)))

    def evaluate(params, data):
        real = data["mask"] > 0
        s = jnp.where(real[None, :], scores(params, data), -jnp.inf)
        per_item = -jnp.diagonal(jax.nn.log_softmax(s, axis=-1))
        return {"loss": jnp.where(real, per_item, 0.0)}

    return Problem(f"infonce_{kind}_gauss_residual", base.init, loss, evaluate,
                   ("a", "b", "ga", "q", "mask"), base.config + ("gauss_residual",),
                   step0_candidate=False)


def _check_pair(i, x, y, split):
    x, y = np.asarray(x), np.asarray(y)
    validate.ndim(f"x_{split}[{i}]", x, 2, "[N, Dx]")
    validate.ndim(f"y_{split}[{i}]", y, 2, "[N, Dy]")
    validate.same_length(**{f"x_{split}[{i}]": (x, 0), f"y_{split}[{i}]": (y, 0)})
    for name, v in ((f"x_{split}[{i}]", x), (f"y_{split}[{i}]", y)):
        if not np.isfinite(v).all():
            raise ValueError(f"{name} {v.shape} holds a non-finite value at item "
                             f"{int(np.argwhere(~np.isfinite(v))[0, 0])}: expected finite values")
    return x, y


def _pad(x: np.ndarray, n: int, d: int) -> np.ndarray:
    return np.pad(x, ((0, n - x.shape[0]), (0, d - x.shape[1])))


def _prepared_tasks(lists, marginals: str) -> list:
    """Each task's ((x_train, y_train), (x_test, y_test)), checked, its marginals transformed
    with the training half's statistics."""
    tasks = []
    for i, (xa, ya, xb, yb) in enumerate(zip(*lists)):
        xa, ya = _check_pair(i, xa, ya, "train")
        xb, yb = _check_pair(i, xb, yb, "test")
        if xa.shape[1] != xb.shape[1] or ya.shape[1] != yb.shape[1]:
            raise ValueError(f"task {i}: train dims ({xa.shape[1]}, {ya.shape[1]}) != test dims "
                             f"({xb.shape[1]}, {yb.shape[1]}): expected the same Dx, Dy")
        if marginals == "gaussianize":
            xa, xb = gaussianize(xa, xb)
            ya, yb = gaussianize(ya, yb)
        elif marginals == "standardize":  # with the training half's statistics
            xa, xb = (v[0] for v in standardize_splits(xa[None], xb[None]))
            ya, yb = (v[0] for v in standardize_splits(ya[None], yb[None]))
        tasks.append(((xa, ya), (xb, yb)))
    return tasks


def _fold_splits(tasks, folds, halves, counts, dims, gaussian: bool, sq_norm: bool,
                 replicas: int, seed: int) -> dict:
    """The bank's rows, {"train", "dev", "test"} -> one row per (task, fold, replica): each
    fold's training half cut to ``m`` items (seeded), held-out halves padded to ``n_eval``."""
    m, n_fit, n_dev, n_eval = counts
    dx, dy, dm = dims
    rng = np.random.default_rng(seed)
    splits = {"train": [], "dev": [], "test": []}
    for task in tasks:
        for f, h in folds:
            perm = rng.permutation(halves[f])[:m]
            fit, dev = perm[:n_fit], perm[n_fit:]
            (x_in, y_in), (x_out, y_out) = task[f], task[h]
            if gaussian:
                rx, ry = cca_rotation(x_in[fit], y_in[fit])
                x_in, x_out, y_in, y_out = x_in @ rx, x_out @ rx, y_in @ ry, y_out @ ry
            for name, idx, xx, yy, n in (("train", fit, x_in, y_in, n_fit), ("dev", dev, x_in, y_in, n_dev),
                                         ("test", slice(None), x_out, y_out, n_eval)):
                xx, yy = xx[idx], yy[idx]
                ga = np.zeros((len(xx), dm), np.float32)
                q = np.zeros(len(xx), np.float32)
                if gaussian:
                    ga_, q = gaussian_offset(x_in[fit], y_in[fit], xx, yy)
                    ga[:, : ga_.shape[1]] = ga_
                if sq_norm:
                    xx, yy = with_sq_norm(xx), with_sq_norm(yy)
                row = {"a": _pad(xx, n, dx), "b": _pad(yy, n, dy), "ga": _pad(ga, n, dm),
                       "q": np.pad(q, (0, n - len(q))), "mask": (np.arange(n) < len(xx)).astype(np.float32)}
                splits[name].extend([row] * replicas)
    return splits


def estimate_mi_bank(
    xs_train, ys_train, xs_test, ys_test, *,
    critic: str = "separable",
    hidden: int = 64,
    embed: int = 16,
    k: int = 128,
    learning_rates=(1e-3, 3e-3),
    steps: int = 600,
    eval_every: int = 50,
    replicas: int = 1,
    cross_fit: bool = True,
    marginals: str = "gaussianize",
    gaussian: bool = True,
    sq_norm: bool = True,
    l2=(0.0,),
    dev_fraction: float = 0.1,
    num_bootstrap: int = 1000,
    ci_level: float = 0.95,
    devices=None,
    seed: int = 0,
) -> list[MIEstimate]:
    """One estimate per task i from pairs (xs_train[i] [n, Dx_i], ys_train[i] [n, Dy_i]) and
    held-out pairs (xs_test[i], ys_test[i]); every task must have the same n_train and n_test.

    critic/hidden/embed: `infonce.py` critics; k: training block size (negatives per query);
    learning_rates: the Adam grid, chosen on dev per (task, fold, replica) with the stopping step;
    replicas: critics per fold (different inits), averaged; cross_fit: also train on the test
    half and score the training half; gaussian: rotate each fold's X and Y to the canonical
    coordinates of its training pairs (`cca_rotation`, invertible, so I is unchanged) and add the
    Gaussian critic of those pairs to the trained one (`residual_problem`); sq_norm: append
    the mean square of each view as a coordinate (`with_sq_norm`); l2: penalty grid on
    the critic's weight matrices, chosen on dev with the learning rate; marginals: "gaussianize"
    (see the module doc), "standardize" or "none". devices: default one device per process (the bank is small; a mesh would only
    add collectives). The CI resamples held-out items (both folds' scores of an item together).
    """
    if critic not in CRITICS:
        raise ValueError(f"critic={critic!r}: expected one of {CRITICS}")
    if marginals not in ("gaussianize", "standardize", "none"):
        raise ValueError(f"marginals={marginals!r}: expected 'gaussianize', 'standardize' or 'none'")
    lists = [list(xs_train), list(ys_train), list(xs_test), list(ys_test)]
    if len({len(v) for v in lists}) != 1 or not lists[0]:
        raise ValueError(f"got {[len(v) for v in lists]} x_train/y_train/x_test/y_test arrays: "
                         "expected the same number (>= 1) of each")
    tasks = _prepared_tasks(lists, marginals)
    sizes = {(a[0].shape[0], b[0].shape[0]) for a, b in tasks}
    if len(sizes) != 1:
        raise ValueError(f"tasks have (n_train, n_test) {sorted(sizes)}: expected one for all tasks")
    halves = sizes.pop()
    dx = max(a[0].shape[1] for a, _ in tasks) + sq_norm
    dy = max(a[1].shape[1] for a, _ in tasks) + sq_norm
    dm = min(dx, dy)

    # Folds: (train half, held-out half). Training halves are cut to one size (a bank trains every
    # layer on the same number of items); held-out halves are padded to one size with mask 0.
    folds = [(0, 1), (1, 0)] if cross_fit else [(0, 1)]
    m = min(halves[f] for f, _ in folds)
    n_dev = max(1, int(round(dev_fraction * m)))
    n_fit = m - n_dev
    validate.enough("training pairs per fold", n_fit, k, f"one block of k={k} after the dev split")
    n_eval = max(halves[h] for _, h in folds)
    splits = _fold_splits(tasks, folds, halves, (m, n_fit, n_dev, n_eval), (dx, dy, dm),
                          gaussian, sq_norm, replicas, seed)

    # fit_bank's weight "w" [N] is shared by all layers; per-layer held-out sizes differ, so the
    # real items are marked by the layer field "mask" [L, N] (w is all ones).
    data = {name: {key: np.stack([r[key] for r in rows]).astype(np.float32) for key in rows[0]}
            for name, rows in splits.items()}
    for d in data.values():
        d["w"] = np.ones(d["a"].shape[1], np.float32)
    test_w = data["test"]["mask"]
    problem = residual_problem(critic, k, hidden, embed)
    grid = hyper_grid("adam", learning_rates, l2, (seed,))
    config = resolve_train_config("adam", steps, k, eval_every, None, None, None,
                                  devices if devices is not None else distributed.one_device_per_process(), seed, {})
    res = fit_bank(problem, grid, config, data["train"], data["dev"], data["test"], (dx, dy))

    # Per-layer bound items: log K_l - loss, K_l the layer's real held-out pairs.
    loss = res.test["loss"].reshape(len(tasks), len(folds), replicas, n_eval)
    k_real = test_w.reshape(len(tasks), len(folds), replicas, n_eval).sum(-1)
    out = []
    for t in range(len(tasks)):
        values, groups = [], []
        for fi, (_, h) in enumerate(folds):
            n_h = halves[h]
            per_item = np.log(k_real[t, fi, 0]) - loss[t, fi, :, :n_h].mean(0)  # replicas averaged
            values.append(per_item)
            groups.append(np.arange(n_h) + (0 if h == 0 else halves[0]))
        values, groups = np.concatenate(values), np.concatenate(groups)
        nats, (lo, hi) = bootstrap.mean_ci(values, groups, level=ci_level,
                                           num_replicates=num_bootstrap, seed=seed)
        layers = slice(t * len(folds) * replicas, (t + 1) * len(folds) * replicas)
        choice = res.choice[layers]
        log_k = float(np.log(k_real[t].min()))
        out.append(estimate_from_nats(
            f"estimate_mi_{critic}", nats, (lo, hi), log_k,
            lr=float(np.median([grid.lr[c] for c in choice])),
            l2=float(np.median([grid.l2[c] for c in choice])), seed=seed,
            step=int(np.median(res.step[layers])), n_test=int(values.size), layer=t))
    return out


def estimate_mi(x_train, y_train, x_test, y_test, **options) -> MIEstimate:
    """The product's generic estimate of I(X; Y) from pairs x_* [N, Dx], y_* [N, Dy] (see the
    module doc): an InfoNCE lower bound on held-out pairs, in bits (nats alongside), with its CI
    and ceiling log2 K; lr / l2 / step are medians over the folds' dev choices. Options as
    `estimate_mi_bank`. On the eight known-MI tasks of `tasks.py` at 2500 + 2500 samples its mean
    absolute error is 0.06 nats (BENCHMARKS.md)."""
    return estimate_mi_bank([x_train], [y_train], [x_test], [y_test], **options)[0]


# --------------------------------------------------------------- same-utterance negatives


@functools.lru_cache(maxsize=None)
def block_problem(kind: str, k: int, hidden: int, embed: int) -> Problem:
    """InfoNCE whose items are whole blocks: a [N_blocks, k, Da], b [N_blocks, k, Db]. Training
    scores each drawn block on its own (negatives from the block only); evaluate returns each
    block's mean per-query loss [N_blocks] (blocks are equal-sized, so the mean over blocks is the
    mean over queries)."""
    base = infonce_problem(kind, k, hidden, embed)
    per_block = lambda params, a, b: nce_losses(critic_scores(params, a, b, kind))

    def loss(params, batch):
        return jnp.mean(jax.vmap(per_block, in_axes=(None, 0, 0))(params, batch["a"], batch["b"]))

    def evaluate(params, data):
        return {"loss": jax.vmap(per_block, in_axes=(None, 0, 0))(params, data["a"], data["b"]).mean(-1)}

    return dataclasses.replace(base, name=f"infonce_{kind}_blocks", loss=loss, evaluate=evaluate,
                               config=base.config + ("blocks",))


def infonce_same_utterance_bank(
    a, b, groups, split, *,
    k: int = 16,
    blocks_per_step: int = 8,
    critic: str = "separable",
    hidden: int = 64,
    embed: int = 32,
    learning_rates=(1e-3, 3e-3),
    steps: int = 600,
    eval_every: int = 100,
    dev_fraction: float = 0.1,
    num_bootstrap: int = 1000,
    ci_level: float = 0.95,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    devices=None,
    layer_chunk: int | None = None,
    max_resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    block_keys=None,
    seed: int = 0,
) -> list[MIEstimate]:
    """InfoNCE bound I(A_l; B_l) >= log K - L_NCE per layer with negatives from the same
    utterance, in training and in evaluation: a [L, N, Da], b [L, N, Db], groups [N] (utterance
    ids), split [N] as `infonce_bank`. K (`k`) is bounded by the utterances' pair counts; every
    block is one utterance's k pairs (`views.utterance_blocks`), `blocks_per_step` blocks per
    Adam step. Layers are loaded and trained `layer_chunk` at a time (at most
    `max_resident_bytes` of features), checkpointed into `checkpoint_dir` as `infonce_bank`.
    Ceiling log2 K. The CI resamples groups (utterances).

    block_keys [N]: cut blocks from the pairs sharing a key instead of a group (e.g. speaker and
    position: negatives from other utterances of the same speaker at the same frame index);
    every block must then lie inside one group (groups = speakers there), the CI's unit."""
    validate.ndim("a", a, 3, "[L, N, Da]")
    validate.ndim("b", b, 3, "[L, N, Db]")
    groups = np.asarray(groups)
    keys = groups if block_keys is None else np.asarray(block_keys)
    n = validate.same_length(a=(a, 1), b=(b, 1), groups=(groups, 0), block_keys=(keys, 0))
    codes = dev_from_train(split_codes(split, n), groups, dev_fraction, seed)
    rng = np.random.default_rng(seed)
    blocks = [utterance_blocks(keys[codes == s], k, rng) for s in range(3)]
    idx = [np.flatnonzero(codes == s)[blk] for s, blk in enumerate(blocks)]  # [n_blocks, k]
    for s, name in enumerate(("train", "dev", "test")):
        validate.enough(f"blocks of K={k} pairs sharing a block key in split {name!r}", len(idx[s]),
                        blocks_per_step if s == 0 else 1, "K pairs per utterance (or per key)")
        mixed = (groups[idx[s]] != groups[idx[s][:, :1]]).any(axis=1)
        if mixed.any():
            raise ValueError(f"block_keys: a block of split {name!r} spans groups "
                             f"{sorted(set(groups[idx[s][np.argmax(mixed)]].tolist()))[:4]}: "
                             f"expected every key inside one group")
    flat = [i.reshape(-1) for i in idx]

    def load(chunk):
        xa = standardize_splits(*[load_rows("a", a, chunk, f) for f in flat], in_place=True)
        xb = standardize_splits(*[load_rows("b", b, chunk, f) for f in flat], in_place=True)
        return [{"a": x.reshape(x.shape[0], -1, k, x.shape[-1]), "b": y.reshape(y.shape[0], -1, k, y.shape[-1]),
                 "w": np.ones(len(i), np.float32)} for x, y, i in zip(xa, xb, idx)]

    log_k = float(np.log(k))
    block_groups = groups[idx[2][:, 0]]
    grid = hyper_grid("adam", learning_rates, (0.0,), (seed,))

    def collect(res, j, layer):
        nats, (lo, hi) = bootstrap.mean_ci(res.test["loss"][j], block_groups, offset=log_k, sign=-1.0,
                                           level=ci_level, num_replicates=num_bootstrap, seed=seed)
        pt = grid.point(int(res.choice[j]))
        return estimate_from_nats(
            f"infonce_same_utterance_{critic}", nats, (lo, hi), log_k, lr=pt["lr"], l2=pt["l2"],
            seed=pt["seed"], step=int(res.step[j]), n_test=int(idx[2].size), layer=layer)

    config = resolve_train_config("adam", steps, blocks_per_step, eval_every, checkpoint_dir, checkpoint_every,
                                  None, devices if devices is not None else distributed.one_device_per_process(), seed, {})
    return fit_layer_chunks(block_problem(critic, k, hidden, embed), grid, config, a.shape[0], load, collect,
                            (a.shape[2], b.shape[2]),
                            bytes_per_layer=4 * (a.shape[2] + b.shape[2]) * sum(f.size for f in flat),
                            layer_chunk=layer_chunk, max_resident_bytes=max_resident_bytes,
                            checkpoint_dir=checkpoint_dir)
