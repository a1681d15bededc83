"""Accuracy and time of the generic estimator `smi.estimate_mi` on the known-MI task set.

The eight task families of `speechmi_jax/estimators/tasks.py` ("Beyond Normal" families,
closed-form truths), `--samples` draws per task and seed, split in half: the first half is
x_train/y_train, the second x_test/y_test. All tasks x seeds are estimated in one call of
`estimate_mi_bank` (one vmapped bank, one compilation; the time includes it). As a measured
reference, KSG (Kraskov, Stoegbauer & Grassberger 2004, estimator 1, k = 5, max-norm) runs on all
samples of each task, with scipy's cKDTree.

    python benchmarks/bench_known_mi.py --seeds 3

Prints a Markdown table: per task the truth, the mean +- sd over seeds, the absolute error of
each estimate averaged over seeds, and the same for KSG; then wall and CPU time and the load
average. `--infonce` adds `smi.infonce_mi` with default options (slow: one bank per estimate).

    python benchmarks/bench_known_mi.py --probe-l2

Probe regularisation by dev choice, in the demo's regime (about 1.3 training frames per weight):
class-conditional Gaussians (`known.class_gaussians`, D = 384, C = 40, shared identity covariance,
so a linear probe can reach the Bayes cross-entropy), 20,000 training frames, 2,000 dev, 5,000
test, in utterance-like groups of 100 frames; three layers of increasing class separation in one
bank. `probe_bank` (L-BFGS, 100 steps) with l2 = (1e-3,) against the dev-chosen grid
(1e-3, 1e-2, 1e-1): wall time of each (after a warm-up call that compiles both) and the bound
each gives, against the Monte-Carlo truth.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from scipy import special
from scipy.spatial import cKDTree

from speechmi_jax.estimators import generic, tasks


def ksg(x: np.ndarray, y: np.ndarray, k: int = 5) -> float:
    """KSG estimator 1 in nats: psi(k) + psi(N) - mean(psi(n_x + 1) + psi(n_y + 1)), max-norm."""
    x = (x - x.mean(0)) / x.std(0)
    y = (y - y.mean(0)) / y.std(0)
    xy = np.hstack([x, y])
    n = len(xy)
    eps = cKDTree(xy).query(xy, k + 1, p=np.inf)[0][:, -1]
    r = np.nextafter(eps, 0)  # strictly closer than the k-th neighbour
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True) - 1
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True) - 1
    return float(special.digamma(k) + special.digamma(n) - np.mean(special.digamma(nx + 1) + special.digamma(ny + 1)))


def probe_l2(repeats: int = 2):
    from speechmi_jax import units
    from speechmi_jax.estimators import api, known

    d, c, n_train, n_dev, n_test = 384, 40, 20_000, 2_000, 5_000
    n = n_train + n_dev + n_test
    layers, truths = [], []
    for sep in (0.05, 0.1, 0.2):
        priors, means = known.class_gaussians(c, d, sep, seed=0)
        z, y = known.sample_classes(priors, means, n, seed=1)  # the same labels for every layer
        layers.append(z)
        truths.append(units.nats_to_bits(known.class_gaussians_mi(priors, means, n=100_000)))
    z = np.stack(layers)
    groups = np.arange(n) // 100
    split = np.where(np.arange(n) < n_train, "train", np.where(np.arange(n) < n_train + n_dev, "dev", "test"))
    print("| l2 grid | wall (s) | " + " | ".join(f"layer {i} (truth {t:.2f} bits)" for i, t in enumerate(truths))
          + " | chosen l2 |")
    print("| --- | --- |" + " --- |" * len(truths) + " --- |")
    for grid in [(1e-3,), (1e-2,), (1e-3, 1e-2), (1e-3, 1e-2, 1e-1)]:
        api.probe_bank(z, y, groups, split, l2=grid, num_bootstrap=10)  # compile
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            est = api.probe_bank(z, y, groups, split, l2=grid, num_bootstrap=10)
            times.append(time.perf_counter() - t0)
        print(f"| {grid} | {np.median(times):.1f} | " + " | ".join(f"{e.bits:.3f}" for e in est)
              + f" | {', '.join(f'{e.l2:g}' for e in est)} |")
    print(f"\nload average {os.getloadavg()[0]:.1f}; median of {repeats} timed calls each")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=5000)
    ap.add_argument("--no-ksg", action="store_true")
    ap.add_argument("--infonce", action="store_true", help="also smi.infonce_mi with default options")
    ap.add_argument("--probe-l2", action="store_true", help="only the probe l2-grid measurement")
    args = ap.parse_args()
    if args.probe_l2:
        return probe_l2()

    task_list = tasks.beyond_normal_tasks()
    runs = [(t, s, *t.sample(args.samples, seed=s)) for t in task_list for s in range(args.seeds)]
    h = args.samples // 2
    load0 = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    ests = generic.estimate_mi_bank([x[:h] for _, _, x, _ in runs], [y[:h] for _, _, _, y in runs],
                                    [x[h:] for _, _, x, _ in runs], [y[h:] for _, _, _, y in runs])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    load1 = os.getloadavg()[0]
    ours = {(t.name, s): e.nats for (t, s, _, _), e in zip(runs, ests)}

    ref, ref_time = {}, 0.0
    if not args.no_ksg:
        t0 = time.perf_counter()
        ref = {(t.name, s): ksg(x.astype(np.float64), y.astype(np.float64)) for t, s, x, y in runs}
        ref_time = time.perf_counter() - t0
    nce, nce_time = {}, 0.0
    if args.infonce:
        import speechmi_jax as smi

        t0 = time.perf_counter()
        nce = {(t.name, s): smi.infonce_mi(x[:h], y[:h], x[h:], y[h:]).nats for t, s, x, y in runs}
        nce_time = time.perf_counter() - t0

    def cells(table, t):
        v = np.array([table[(t.name, s)] for s in range(args.seeds)])
        return f"{v.mean():.3f} ± {v.std():.3f}", np.abs(v - t.mi_nats).mean()

    cols = [("estimate_mi", ours)] + ([("KSG k=5", ref)] if ref else []) + (
        [("infonce_mi (defaults)", nce)] if nce else [])
    head = "| task | truth (nats) | " + " | ".join(f"{c} | abs err" for c, _ in cols) + " |"
    print(head)
    print("|" + " --- |" * (2 + 2 * len(cols)))
    errs = {c: [] for c, _ in cols}
    for t in task_list:
        row = [t.name, f"{t.mi_nats:.3f}"]
        for c, table in cols:
            s, e = cells(table, t)
            errs[c].append(e)
            row += [s, f"{e:.3f}"]
        print("| " + " | ".join(row) + " |")
    print("| **mean absolute error** | | " + " | ".join(f"| **{np.mean(errs[c]):.3f}**" for c, _ in cols) + " |")
    n = len(runs)
    print(f"\nestimate_mi: {n} estimates ({len(task_list)} tasks x {args.seeds} seeds, {h} + {h} samples) "
          f"in one bank: {wall:.1f} s wall ({wall / n:.2f} s per estimate), {cpu:.1f} s CPU, "
          f"compilation included; load average {load0:.1f} before, {load1:.1f} after")
    if ref:
        print(f"KSG k=5 (cKDTree, all {args.samples} samples): {ref_time:.1f} s wall for {n} estimates "
              f"({ref_time / n:.2f} s each)")
    if nce:
        print(f"infonce_mi defaults: {nce_time:.1f} s wall for {n} estimates ({nce_time / n:.2f} s each)")


if __name__ == "__main__":
    main()
