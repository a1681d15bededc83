"""Public estimators: MI in bits with a group-bootstrap interval and the ceiling that bounds it.

    probe_mi(z_train, y_train, z_test, y_test, **options)   -> MIEstimate   (one layer)
    infonce_mi(a_train, b_train, a_test, b_test, **options) -> MIEstimate
    probe_bank(z [L, N, D], y [N], groups [N], split [N], **options)        -> [MIEstimate] * L
    infonce_bank(a [L, N, Da], b [L or 1, N, Db], groups [N], split [N], **options) -> [MIEstimate] * L

split holds "train" / "dev" / "test" (or 0 / 1 / 2). Without dev items, a `dev_fraction` of the
training *groups* (utterances) becomes the dev split. The grid point (learning rate, l2, seed) and
the stopping step are chosen per layer on dev; the test figure is reported for that choice.
Features are standardised per dimension with training statistics (an invertible affine map: it
changes neither a linear probe's function class nor any MI), loaded `layer_chunk` layers at a time
(float16 memmaps are read chunk by chunk, never whole).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from speechmi_jax import units
from speechmi_jax.estimators import bootstrap, validate
from speechmi_jax.estimators.bank import Grid
from speechmi_jax.estimators.infonce import CRITICS, infonce_problem, infonce_problem_shared_b
from speechmi_jax.estimators.probe import PROBES, label_entropy, log_prior, probe_problem
from speechmi_jax.estimators.train import DEFAULT_RESIDENT_BYTES, fit_layer_chunks, train_config

SPLITS = ("train", "dev", "test")


@dataclasses.dataclass(frozen=True)
class MIEstimate:
    """One MI lower bound on the test split: bits, its group-bootstrap percentile interval ci
    (lo, hi) in bits, and the ceiling that bounds it, ceiling_bits: H(Y) for a probe, log2 K for
    InfoNCE (also readable as h_y_bits / log2_k). accuracy / accuracy_ci: probes only.

    lr / l2 / seed / step: the grid point and stopping step chosen on dev (lr None for L-BFGS).
    """

    measure: str
    bits: float
    ci: tuple[float, float]
    ceiling_bits: float
    lr: float | None
    l2: float
    seed: int
    step: int
    n_test: int
    layer: int | None = None
    accuracy: float | None = None
    accuracy_ci: tuple[float, float] | None = None

    @property
    def nats(self) -> float:
        return float(units.bits_to_nats(self.bits))

    @property
    def h_y_bits(self) -> float | None:
        """H(Y) of the test labels, the probe bound's ceiling (None for InfoNCE)."""
        return self.ceiling_bits if self.measure.startswith("probe") else None

    @property
    def log2_k(self) -> float | None:
        """log2 K, the contrastive bound's ceiling (None for probes)."""
        return None if self.measure.startswith("probe") else self.ceiling_bits


def estimate_from_nats(measure: str, nats: float, ci_nats, ceiling_nats: float, **fields) -> MIEstimate:
    """MIEstimate from figures in nats (the estimators' working unit)."""
    bits = lambda v: float(units.nats_to_bits(v))
    return MIEstimate(measure=measure, bits=bits(nats), ci=(bits(ci_nats[0]), bits(ci_nats[1])),
                      ceiling_bits=bits(ceiling_nats), **fields)


# ----------------------------------------------------------------------------- splits and loading


def split_codes(split, n: int) -> np.ndarray:
    """Split of every item [n] as codes 0/1/2 (train/dev/test) from names or codes; anything
    else raises naming the first bad item."""
    split = np.asarray(split)
    if split.shape != (n,):
        raise ValueError(f"split has shape {split.shape}: expected ({n},) to match the items")
    if split.dtype.kind in "USO":
        codes = np.full(n, -1, np.int8)
        for i, name in enumerate(SPLITS):
            codes[split == name] = i
    else:
        codes = split.astype(np.int8)
    bad = (codes < 0) | (codes > 2)
    if bad.any():
        raise ValueError(f"split[{int(np.flatnonzero(bad)[0])}] = {split[bad][0]!r}: expected one of {SPLITS} or 0/1/2")
    return codes


def dev_from_train(codes, groups, dev_fraction: float, seed: int) -> np.ndarray:
    """Moves a random `dev_fraction` of the training groups to dev when no dev items were given."""
    if (codes == 1).any():
        return codes
    if not 0 < dev_fraction < 1:
        raise ValueError(f"no dev items in split and dev_fraction={dev_fraction}: expected in (0, 1)")
    train_groups = np.unique(groups[codes == 0])
    rng = np.random.default_rng(seed)
    n_dev = max(1, int(round(dev_fraction * train_groups.size)))
    if n_dev >= train_groups.size:
        raise ValueError(f"{train_groups.size} training groups cannot spare {n_dev} for dev")
    dev_groups = rng.choice(train_groups, n_dev, replace=False)
    codes = codes.copy()
    codes[(codes == 0) & np.isin(groups, dev_groups)] = 1
    return codes


def load_rows(name: str, x, layers: slice, idx: np.ndarray) -> np.ndarray:
    """float32 copy of x[layers][:, idx] ([l, n, D]), C-contiguous and writable (callers
    standardise it in place); checks finiteness, naming layer and item.

    Gathered a layer at a time into one C-ordered array: numpy's ``h[:, idx]`` on an [L, N, D]
    array returns the rows item-major ([n, l, D] memory under [l, n, D] strides), and every
    later step that needs contiguous rows (a reshape of the whole array, the copy to the
    device) then copies it once more (measured: ~2 s per InfoNCE bank on Whisper tiny.en)."""
    part = x[layers]
    out = np.empty((part.shape[0], idx.size, part.shape[2]), np.float32)
    for j in range(out.shape[0]):
        out[j] = np.asarray(part[j:j + 1][:, idx])[0]
    validate.finite(name, x.shape, out, layers.start, idx)
    return out


def _moments(x: np.ndarray, chunk_elems: int = 1 << 18) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation [D] of x [n, D] over its rows, in float64, as ``np.mean`` /
    ``np.std`` (two passes: the mean, then the mean squared deviation from it), taken over
    blocks of rows of ~2 MB: ``np.std`` of the whole array allocates an [n, D] float64
    temporary, which glibc maps afresh and the kernel zero-fills on every call (~0.4 s per
    Whisper tiny.en layer of the bundled corpus, against ~0.03 s)."""
    n, d = x.shape
    rows = max(1, chunk_elems // max(d, 1))
    mean = sum((x[i:i + rows].sum(axis=0, dtype=np.float64) for i in range(0, n, rows)), np.zeros(d)) / n
    sq = np.zeros(d)
    for i in range(0, n, rows):
        dev = x[i:i + rows] - mean
        sq += np.einsum("nd,nd->d", dev, dev)
    return mean, np.sqrt(sq / n)


def standardize_splits(train, *others, in_place: bool = False):
    """Splits [l, n, D] standardised per layer and dimension with the first one's statistics,
    computed in float64: float32 squares overflow past |x| ~ 1e19 (features scaled by 1e30 gave
    std = inf, all-zero inputs and ~0 bits). in_place: overwrite the (float32) inputs instead
    of allocating a copy of each (the same numbers; for arrays the caller just loaded). The
    statistics are taken layer by layer, in blocks of rows (:func:`_moments`)."""
    mean, std = (np.stack(m)[:, None] for m in zip(*(_moments(t) for t in train)))
    std = np.where(std > 1e-6 * (np.abs(mean) + 1), std, 1.0)
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    if not in_place:
        return [(x - mean) / std for x in (train, *others)]
    for x in (train, *others):
        x -= mean
        x /= std
    return [train, *others]


def resolve_train_config(optimizer, steps, batch_size, eval_every, checkpoint_dir, checkpoint_every,
                         mesh_shape, devices, seed, defaults):
    """``train.train_config`` with ``steps`` / ``eval_every`` left as None taken from
    ``defaults`` (the estimator's own)."""
    steps = steps if steps is not None else defaults["steps"]
    return train_config(optimizer, steps, batch_size,
                        eval_every if eval_every is not None else defaults["eval_every"],
                        checkpoint_dir=checkpoint_dir, checkpoint_every=checkpoint_every,
                        mesh_shape=mesh_shape, devices=devices, seed=seed)


def hyper_grid(optimizer, learning_rates, l2, seeds):
    """The bank's grid of (learning rate, l2, seed): L-BFGS takes no learning rates (its line
    search sets the step), Adam needs them."""
    if optimizer == "lbfgs":
        if learning_rates is not None:
            raise ValueError("optimizer='lbfgs' uses a line search: expected learning_rates=None")
        learning_rates = (1.0,)
    elif learning_rates is None:
        raise ValueError("optimizer='adam' needs learning_rates")
    return Grid.product(learning_rates, l2, seeds)


# ----------------------------------------------------------------------------------- probes


def probe_bank(
    z, y, groups, split, *,
    num_classes: int | None = None,
    probe: str = "linear",
    hidden: int = 256,
    optimizer: str = "lbfgs",
    learning_rates=None,
    l2=(0.0,),
    seeds=(0,),
    steps: int | None = None,
    batch_size: int | None = None,
    eval_every: int | None = None,
    dev_fraction: float = 0.1,
    standardize: bool = True,
    entropy_estimator: str = "miller_madow",
    num_bootstrap: int = 1000,
    ci_level: float = 0.95,
    stratify_ci: bool = False,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    mesh_shape=None,
    devices=None,
    layer_chunk: int | None = None,
    max_resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    seed: int = 0,
) -> list[MIEstimate]:
    """Probe bound I(Y; Z_l) >= H(Y) - CE for every layer l, trained as one bank.

    z [L, N, D] (any array-like, e.g. a float16 memmap), y [N] int (-1 = no label, ignored),
    groups [N] (utterance ids: the bootstrap unit and the dev-split unit), split [N].
    optimizer "lbfgs" (full batch; default, 100 steps, dev check every 5) or "adam" (needs
    learning_rates; default 2000 steps, batch_size None = full batch). l2: grid of penalties
    0.5 * l2 * |W|^2, chosen per layer on dev. With few training items per weight (N_train not
    much larger than D * C) pass a grid such as (1e-3, 1e-2, 1e-1): unregularised, the bound
    rests on where early stopping lands and can be far looser (measured in BENCHMARKS.md,
    "Time to converged estimates"). Probes start at the training label prior (W = 0), which is a
    candidate at step 0. H(Y): `entropy_estimator` ("miller_madow" or "plugin", see probe.py) of
    the test labels; CE on the same test items. The interval resamples test groups (see
    bootstrap.probe_bound_ci); stratify_ci=True resamples them within each label, for test sets
    whose label composition is fixed by design (every group must carry one label, e.g.
    speakers). Returns one MIEstimate per layer.
    """
    if probe not in PROBES:
        raise ValueError(f"probe={probe!r}: expected one of {PROBES}")
    validate.ndim("z", z, 3, "[L, N, D]")
    y = np.asarray(y)
    validate.ndim("y", y, 1, "[N]")
    groups = np.asarray(groups) if groups is not None else np.arange(y.shape[0])
    n = validate.same_length(z=(z, 1), y=(y, 0), groups=(groups, 0))
    codes = split_codes(split, n)
    num_classes = validate.labels("y", y, num_classes)
    codes = dev_from_train(codes, groups, dev_fraction, seed)
    idx = [np.flatnonzero((codes == s) & (y >= 0)) for s in range(3)]
    for s, name in enumerate(SPLITS):
        validate.enough(f"y[split == {name!r}] (labelled)", idx[s].size, 2, "a probe needs data in every split")
    validate.classes_in_train(y[idx[0]], y[idx[1]], "the dev split")
    validate.classes_in_train(y[idx[0]], y[idx[2]], "the test split")
    validate.several_classes("y[split == 'test'] (y_test)", y[idx[2]])

    grid = hyper_grid(optimizer, learning_rates, l2, seeds)
    config = resolve_train_config(optimizer, steps, batch_size, eval_every, checkpoint_dir, checkpoint_every,
                                  mesh_shape, devices, seed, {"steps": 100 if optimizer == "lbfgs" else 2000,
                                                       "eval_every": 5 if optimizer == "lbfgs" else 50})
    problem = probe_problem(probe, log_prior(y[idx[0]], num_classes), hidden)
    num_layers, _, dim = z.shape
    y_test, g_test = y[idx[2]], groups[idx[2]]
    h_y = label_entropy(y_test, num_classes, entropy_estimator)

    def load(chunk):
        xs = [load_rows("z", z, chunk, i) for i in idx]
        if standardize:
            xs = standardize_splits(*xs, in_place=True)
        return [{"x": x, "y": y[i].astype(np.int32), "w": np.ones(i.size, np.float32)} for x, i in zip(xs, idx)]

    def collect(res, j, layer):
        ce = res.test["loss"][j]
        nats, ci = bootstrap.probe_bound_ci(ce, y_test, g_test, h_y, stratify=stratify_ci, level=ci_level,
                                            num_replicates=num_bootstrap, seed=seed)
        accuracy, accuracy_ci = bootstrap.mean_ci(res.test["correct"][j], g_test, level=ci_level,
                                                  num_replicates=num_bootstrap, seed=seed)
        pt = grid.point(int(res.choice[j]))
        return estimate_from_nats(f"probe_{probe}", nats, ci, h_y, lr=pt["lr"] if optimizer == "adam" else None,
                                  l2=pt["l2"], seed=pt["seed"], step=int(res.step[j]), n_test=int(ce.size),
                                  layer=layer, accuracy=accuracy, accuracy_ci=accuracy_ci)

    return fit_layer_chunks(problem, grid, config, num_layers, load, collect, (dim, num_classes),
                            bytes_per_layer=4 * dim * sum(i.size for i in idx), layer_chunk=layer_chunk,
                            max_resident_bytes=max_resident_bytes, checkpoint_dir=checkpoint_dir)


def _single_layer(train, test, dev, name):
    """Stacks per-split single-layer arrays into ([1, N, D], split codes)."""
    parts = [(np.asarray(train), 0), (np.asarray(test), 2)] + ([(np.asarray(dev), 1)] if dev is not None else [])
    for arr, s in parts:
        validate.ndim(f"{name}_{SPLITS[s]}", arr, 2, "[N, D]")
    dims = {arr.shape[1] for arr, _ in parts}
    if len(dims) != 1:
        raise ValueError(f"{name} splits have feature dims {[a.shape for a, _ in parts]}: expected one D")
    x = np.concatenate([a for a, _ in parts])[None]
    codes = np.concatenate([np.full(a.shape[0], s, np.int8) for a, s in parts])
    return x, codes, [a.shape[0] for a, _ in parts]


def _single_groups(groups_by_split, sizes):
    out = []
    for g, n in zip(groups_by_split, sizes):
        g = np.arange(n) if g is None else np.asarray(g)
        if g.shape != (n,):
            raise ValueError(f"groups has shape {g.shape}: expected ({n},) to match its split")
        out.append(np.asarray([f"{len(out)}:{v}" for v in g]))
    return np.concatenate(out)


def probe_mi(z_train, y_train, z_test, y_test, *, z_dev=None, y_dev=None, groups_train=None,
             groups_test=None, groups_dev=None, **options) -> MIEstimate:
    """Probe bound for one representation: z_* [N, D], y_* [N] int. Options as `probe_bank`."""
    if (z_dev is None) != (y_dev is None):
        raise ValueError("z_dev and y_dev go together: pass both or neither")
    z, codes, sizes = _single_layer(z_train, z_test, z_dev, "z")
    ys = [np.asarray(y_train), np.asarray(y_test)] + ([np.asarray(y_dev)] if y_dev is not None else [])
    for yy, nn, s in zip(ys, sizes, (0, 2, 1)):
        if yy.shape != (nn,):
            raise ValueError(f"y_{SPLITS[s]} has shape {yy.shape}: expected ({nn},) to match z_{SPLITS[s]}")
    groups = _single_groups([groups_train, groups_test, groups_dev][: len(sizes)], sizes)
    return probe_bank(z, np.concatenate(ys), groups, codes, **options)[0]


# ---------------------------------------------------------------------------------- InfoNCE


def _blocks(idx: np.ndarray, k: int, rng) -> np.ndarray:
    """Random order, truncated to whole blocks of K (held-out pairs are scored block by block)."""
    perm = rng.permutation(idx)
    return perm[: (perm.size // k) * k]


def infonce_bank(
    a, b, groups, split, *,
    k: int = 128,
    critic: str = "separable",
    hidden: int = 256,
    embed: int = 64,
    optimizer: str = "adam",
    learning_rates=(3e-4, 1e-3, 3e-3),
    l2=(0.0,),
    seeds=(0,),
    steps: int | None = None,
    eval_every: int | None = None,
    dev_fraction: float = 0.1,
    standardize: bool = True,
    num_bootstrap: int = 1000,
    ci_level: float = 0.95,
    checkpoint_dir=None,
    checkpoint_every: int | None = None,
    mesh_shape=None,
    devices=None,
    layer_chunk: int | None = None,
    max_resident_bytes: int = DEFAULT_RESIDENT_BYTES,
    seed: int = 0,
) -> list[MIEstimate]:
    """InfoNCE bound I(A_l; B_l) >= log K - L_NCE for every layer l, trained as one bank.

    a [L, N, Da]; b [L, N, Db] (per-layer partner) or [1, N, Db] (one partner for all layers,
    e.g. the input features); pair i is (a[:, i], b[:, i]) and belongs to groups[i]. Training
    draws random blocks of K training pairs (minibatch Adam, default 2000 steps); dev and test
    pairs are cut into fixed random blocks of K. Returns one MIEstimate per layer; ceiling log2 K.
    """
    if critic not in CRITICS:
        raise ValueError(f"critic={critic!r}: expected one of {CRITICS}")
    if optimizer != "adam":
        raise ValueError(f"optimizer={optimizer!r}: InfoNCE trains on random blocks of K; expected 'adam'")
    validate.ndim("a", a, 3, "[L, N, Da]")
    validate.ndim("b", b, 3, "[L or 1, N, Db]")
    if b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"b has shape {tuple(b.shape)}: expected {a.shape[0]} or 1 layers to match a {tuple(a.shape)}")
    n = validate.same_length(a=(a, 1), b=(b, 1), groups=(np.asarray(groups), 0))
    groups = np.asarray(groups)
    codes = dev_from_train(split_codes(split, n), groups, dev_fraction, seed)
    rng = np.random.default_rng(seed)
    idx = [np.flatnonzero(codes == s) for s in range(3)]
    for s, name in enumerate(SPLITS):
        validate.enough(f"pairs in split {name!r}", idx[s].size, k, f"one block of K={k} candidates")
    idx = [idx[0]] + [_blocks(i, k, rng) for i in idx[1:]]

    grid = hyper_grid(optimizer, learning_rates, l2, seeds)
    config = resolve_train_config(optimizer, steps, k, eval_every, checkpoint_dir, checkpoint_every,
                                  mesh_shape, devices, seed, {"steps": 2000, "eval_every": 100})
    shared_b = b.shape[0] == 1 and a.shape[0] > 1
    problem = (infonce_problem_shared_b if shared_b else infonce_problem)(critic, k, hidden, embed)
    num_layers = a.shape[0]
    per_layer = 4 * (a.shape[2] + (0 if shared_b else b.shape[2])) * sum(i.size for i in idx)
    log_k = math.log(k)
    b_all = [load_rows("b", b, slice(0, 1), i) for i in idx] if shared_b else None
    if shared_b and standardize:
        b_all = standardize_splits(*b_all, in_place=True)

    def load(chunk):
        xa = [load_rows("a", a, chunk, i) for i in idx]
        xb = b_all if shared_b else [load_rows("b", b, chunk, i) for i in idx]
        if standardize:
            xa = standardize_splits(*xa, in_place=True)
            xb = xb if shared_b else standardize_splits(*xb, in_place=True)
        return [{"a": xa_, "b": xb_[0] if shared_b else xb_, "w": np.ones(i.size, np.float32)}
                for xa_, xb_, i in zip(xa, xb, idx)]

    def collect(res, j, layer):
        losses = res.test["loss"][j]
        nats, ci = bootstrap.mean_ci(losses, groups[idx[2]], offset=log_k, sign=-1.0, level=ci_level,
                                     num_replicates=num_bootstrap, seed=seed)
        pt = grid.point(int(res.choice[j]))
        return estimate_from_nats(f"infonce_{critic}", nats, ci, log_k, lr=pt["lr"], l2=pt["l2"], seed=pt["seed"],
                                  step=int(res.step[j]), n_test=int(losses.size), layer=layer)

    return fit_layer_chunks(problem, grid, config, num_layers, load, collect, (a.shape[2], b.shape[2]),
                            bytes_per_layer=per_layer, layer_chunk=layer_chunk,
                            max_resident_bytes=max_resident_bytes, checkpoint_dir=checkpoint_dir,
                            pad_multiple=k)


def infonce_mi(a_train, b_train, a_test, b_test, *, a_dev=None, b_dev=None, groups_train=None,
               groups_test=None, groups_dev=None, **options) -> MIEstimate:
    """InfoNCE bound between paired views a_* [N, Da], b_* [N, Db]. Options as `infonce_bank`."""
    if (a_dev is None) != (b_dev is None):
        raise ValueError("a_dev and b_dev go together: pass both or neither")
    a, codes, sizes = _single_layer(a_train, a_test, a_dev, "a")
    b, codes_b, sizes_b = _single_layer(b_train, b_test, b_dev, "b")
    if sizes != sizes_b:
        raise ValueError(f"a splits have {sizes} items but b splits {sizes_b}: expected the same pairs")
    groups = _single_groups([groups_train, groups_test, groups_dev][: len(sizes)], sizes)
    return infonce_bank(a, b, groups, codes, **options)[0]
