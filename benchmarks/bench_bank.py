"""Speed of the estimator bank, and how close each InfoNCE critic gets to a known MI.

Three parts (each its own flag; results go to BENCHMARKS.md, "Estimator bank"):

--step      One banked Adam step of 13 layers x 8 probes (D=768, 40 classes, batch 4096) vs
            (i) the same 104 probes each as its own jitted step in a Python loop and (ii) a
            PyTorch loop of one nn.Linear + Adam per probe (s3prl-style). GFLOP/s against a
            float32 matmul peak measured in the same run. ``--torch-device cuda`` runs the
            PyTorch loop on the GPU that JAX uses (``--precision``: float32 or tf32 on both).
--converge  Time until all 13 layers' probe bounds are within 0.01 bits of the converged optimum
            of one shared l2-regularised objective: the bank with full-batch L-BFGS vs PyTorch
            minibatch Adam epochs (one probe per layer, the s3prl way). This compares
            optimisers (full-batch L-BFGS vs constant-rate minibatch Adam) as much as
            implementations. Prints the BENCHMARKS.md table, every row of it.
--critics   Two-pair Gaussian (5 x 5, rho = 0.8, 1.022 nats) and MI-preserving maps of it
            (asinh, cube, normal CDF) for the separable / concat / bilinear critics.

    python benchmarks/bench_bank.py --step --converge --critics

~10 min on a 2-core CPU. torch is a benchmark-only reference (never imported by the library).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax import units
from speechmi_jax.estimators import api, bank, known, probe
from timing import add_device_args, describe_devices, matmul_peak, median_seconds, setup_devices  # benchmarks/timing.py

L, P, D, C, B = 13, 8, 768, 40, 4096


def bench_step(args, device, sync):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(L, B, D)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, C, B).astype(np.int32))
    batch = {"x": x, "y": y, "w": jnp.ones((B,), jnp.float32)}
    problem = probe.probe_problem("linear", tuple([float(-np.log(C))] * C))
    grid = bank.Grid.product([1e-4, 3e-4, 1e-3, 3e-3], seeds=(0, 1))
    params, opt = bank.init_bank(problem, "adam", grid, L, (D, C), jax.random.key_data(jax.random.key(0)))
    hp = grid.arrays()
    step = jax.jit(lambda p, o, b: bank.bank_step(problem, "adam", p, o, hp, b)[:2])
    flops = 4 * B * D * C * P * L  # forward x W and the weight gradient x^T dlogits

    state = [params, opt]

    def banked():
        state[:] = step(state[0], state[1], batch)
        jax.block_until_ready(state)

    t_bank = median_seconds(banked, 5)

    # (i) each probe its own jitted step (the same kernel with L = P = 1), looped in Python.
    one_grid = bank.Grid.product([1e-3])
    p1, o1 = bank.init_bank(problem, "adam", one_grid, 1, (D, C), jax.random.key_data(jax.random.key(0)))
    step1 = jax.jit(lambda p, o, b: bank.bank_step(problem, "adam", p, o, one_grid.arrays(), b)[:2])
    singles = [[p1, o1] for _ in range(L * P)]
    layer_batches = [{"x": x[l:l + 1], "y": y, "w": batch["w"]} for l in range(L)]

    def looped():
        for i, s in enumerate(singles):
            s[:] = step1(s[0], s[1], layer_batches[i // P])
        jax.block_until_ready(singles)

    t_loop = median_seconds(looped, 3)

    # (ii) PyTorch: one nn.Linear + Adam per probe.
    import torch

    torch.manual_seed(0)
    tx = [torch.from_numpy(np.array(x[l])).to(device) for l in range(L)]
    ty = torch.from_numpy(np.asarray(y)).long().to(device)
    heads = [torch.nn.Linear(D, C).to(device) for _ in range(L * P)]
    opts = [torch.optim.Adam(h.parameters(), lr=1e-3) for h in heads]

    def torch_loop():
        for i, (h, o) in enumerate(zip(heads, opts)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(h(tx[i // P]), ty).backward()
            o.step()
        sync()

    t_torch = median_seconds(torch_loop, 3)
    n_peak, peak = matmul_peak()
    # The bank's own matmul shape, forward only: [B, D] x [D, P * C] per layer.
    w = jnp.zeros((L, D, P * C), jnp.float32)
    fwd = jax.jit(lambda x, w: jnp.einsum("lnd,ldk->lnk", x, w))
    shape_peak = 2 * B * D * C * P * L / median_seconds(lambda: fwd(x, w).block_until_ready(), 5) / 1e9
    print(describe_devices(args))
    print(f"torch threads {torch.get_num_threads()}; float32 matmul peak {peak:.1f} GFLOP/s ({n_peak}^3), "
          f"{shape_peak:.1f} GFLOP/s for the bank's shape ({L} x [{B}, {D}] x [{D}, {P * C}])")
    print(f"| implementation | s / step (104 probes) | GFLOP/s | % of {n_peak}^3 peak | % of same-shape matmul "
          "| time / bank |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, t in [("bank (one jitted vmapped step)", t_bank), ("per-probe jitted steps, Python loop", t_loop),
                    ("PyTorch nn.Linear + Adam per probe", t_torch)]:
        g = flops / t / 1e9
        step_s = f"{t:.3f}" if t >= 0.1 else f"{t:.5f}"  # GPU steps take ~1 ms
        print(f"| {name} | {step_s} | {g:.1f} | {100 * g / peak:.0f} % | {100 * g / shape_peak:.0f} % "
              f"| {t / t_bank:.2f}x |")


def _layers(n: int, seed: int):
    """13 layers of one 40-class task: layer l keeps a fraction of the class signal."""
    priors, means = known.class_gaussians(C, D, separation=0.12, seed=0)
    z, y = known.sample_classes(priors, means, n, seed)
    noise = np.random.default_rng(seed + 100).normal(size=(L, n, D)).astype(np.float32)
    scale = np.linspace(0.3, 1.5, L).astype(np.float32)[:, None, None]
    return z[None] * scale + noise * 0.5, y


def _settled(errors, tol=0.01):
    """Index of the first entry after which every error is < tol, or None."""
    bad = [i for i, e in enumerate(errors) if e >= tol]
    first = bad[-1] + 1 if bad else 0
    return first if first < len(errors) else None


def bench_converge(n_train: int, n_eval: int, l2: float, ref_steps: int, epochs: int, torch_lrs,
                   bank_steps=(3, 5, 8, 20), report_epochs=(10, 20, 40)):
    """Time until all 13 layers are within 0.01 bits of the optimum of one shared objective.

    Both sides minimise mean CE + 0.5 * l2 * |W|^2 (biases free; torch.optim.Adam's coupled
    weight_decay on the weight matrix is exactly that gradient) on the same standardised features.
    With l2 > 0 the objective is strongly convex, so "converged" means the one optimum and does not
    depend on an optimiser's implicit regularisation or on where early stopping lands (an earlier
    comparison, unregularised at N < D * C, measured only that). The reference is the bank's
    L-BFGS after ref_steps, checked against half as many. Each method is scored on its current
    iterate (no early stopping; the bank's step-0 candidate only wins for a layer with nothing to
    find), and its time is the wall clock from which every later measurement stays within 0.01.
    The table has a row per bank step count and per PyTorch learning rate at each of
    report_epochs (epochs past `epochs` are not run).
    """
    report_epochs = tuple(e for e in report_epochs if e <= epochs) or (epochs,)
    z, y = _layers(n_train + 2 * n_eval, seed=1)
    split = np.repeat(["train", "dev", "test"], [n_train, n_eval, n_eval])
    groups = np.arange(split.size) // 50
    common = dict(devices=jax.devices()[:1], num_bootstrap=10, l2=(l2,))

    def bank_run(steps):
        t = time.perf_counter()
        est = api.probe_bank(z, y, groups, split, steps=steps, eval_every=steps, **common)
        return np.array([e.bits for e in est]), time.perf_counter() - t

    ref, ref_wall = bank_run(ref_steps)
    half, _ = bank_run(ref_steps // 2)
    print(f"N train/dev/test {n_train}/{n_eval}/{n_eval}, D {D}, C {C}, l2 {l2}")
    print(f"reference (L-BFGS, {ref_steps} steps, {ref_wall:.0f} s): {np.round(ref, 3).tolist()}")
    print(f"reference vs {ref_steps // 2} steps: max abs diff {np.abs(ref - half).max():.5f} bits")

    rows = []  # (method, setting, wall s, max abs error bits) as the table prints them
    walls, errs = [], []
    for steps in bank_steps:
        est, wall = bank_run(steps)
        walls.append(wall)
        errs.append(float(np.abs(est - ref).max()))
        rows.append(("bank, full-batch L-BFGS", f"{steps} steps", wall, f"{errs[-1]:.4f} bits"))
    i = _settled(errs)
    times = {"bank": None if i is None else walls[i]}

    import torch

    idx = {s: np.flatnonzero(split == s) for s in ("train", "test")}
    mean, std = z[:, idx["train"]].mean(1, keepdims=True), z[:, idx["train"]].std(1, keepdims=True)
    zt = torch.from_numpy((z - mean) / std)
    yt = torch.from_numpy(y).long()
    h_y = probe.label_entropy(y[idx["test"]], C)
    tr = torch.from_numpy(idx["train"])
    ce = torch.nn.functional.cross_entropy
    for lr in torch_lrs:
        torch.manual_seed(0)
        heads = [torch.nn.Linear(D, C) for _ in range(L)]
        opts = [torch.optim.Adam([{"params": [h.weight], "weight_decay": l2}, {"params": [h.bias]}], lr=lr)
                for h in heads]
        walls, errs = [], []
        t0 = time.perf_counter()
        for epoch in range(1, epochs + 1):
            perm = tr[torch.randperm(tr.numel())]
            for l, (h, o) in enumerate(zip(heads, opts)):
                for s in range(0, perm.numel(), 256):
                    b = perm[s:s + 256]
                    o.zero_grad()
                    ce(h(zt[l, b]), yt[b]).backward()
                    o.step()
            with torch.no_grad():
                bits = np.array([units.nats_to_bits(h_y - ce(h(zt[l, idx["test"]]), yt[idx["test"]]).item())
                                 for l, h in enumerate(heads)])
            walls.append(time.perf_counter() - t0)
            errs.append(float(np.abs(bits - ref).max()))
            if epoch in report_epochs:
                best = (f" (best {min(errs):.4f}, epoch {int(np.argmin(errs)) + 1})"
                        if epoch == max(report_epochs) else "")
                rows.append((f"PyTorch `nn.Linear` + Adam per layer, bs 256, lr {lr:g}", f"{epoch} epochs",
                             walls[-1], f"{errs[-1]:.4f} bits{best}"))
        i = _settled(errs)
        times[f"torch lr {lr:g}"] = None if i is None else walls[i]

    print("Optimisers compared as much as implementations: full-batch L-BFGS (bank) vs constant-rate "
          "minibatch Adam (PyTorch).")
    print("| method | setting | wall (incl. compile) | max abs error vs reference |")
    print("| --- | --- | --- | --- |")
    for method, setting, wall, err in rows:
        print(f"| {method} | {setting} | {wall:.1f} s | {err} |")

    print("time from which all 13 layers stay within 0.01 bits of the reference:")
    for name, t in times.items():
        ratio = "" if t is None or times["bank"] is None or name == "bank" else f" ({t / times['bank']:.1f}x the bank)"
        print(f"  {name}: " + ("never" if t is None else f"{t:.1f} s") + ratio)
    found = [t for n, t in times.items() if n != "bank" and t is not None]
    if times["bank"] is not None and len(found) == len(torch_lrs):
        print(f"  PyTorch lr sweep (all {len(torch_lrs)} runs): {sum(found):.1f} s "
              f"({sum(found) / times['bank']:.1f}x the bank)")


def bench_critics(steps: int):
    cov = known.two_pair_cov(5, 5, n_pairs=2, rho=0.8)
    truth = known.gaussian_mi(cov, 5)
    a, b = known.sample_gaussian(cov, 5, 20000, seed=0)
    at, bt = known.sample_gaussian(cov, 5, 4096, seed=1)
    print(f"truth {truth:.3f} nats; K = 128; {steps} Adam steps; lr grid (1e-3, 3e-3)")
    print("| critic | " + " | ".join(known.MAPS) + " |")
    print("| --- |" + " --- |" * len(known.MAPS))
    for critic in ("separable", "concat", "bilinear"):
        row = []
        for f in known.MAPS.values():
            est = api.infonce_mi(f(a), f(b), f(at), f(bt), k=128, critic=critic, steps=steps,
                                 learning_rates=(1e-3, 3e-3), hidden=64, embed=32, eval_every=100,
                                 devices=jax.devices()[:1], num_bootstrap=10)
            row.append(f"{est.nats:.3f} ({est.nats / truth:.0%})")
        print(f"| {critic} | " + " | ".join(row) + " |")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--step", action="store_true")
    parser.add_argument("--converge", action="store_true")
    parser.add_argument("--critics", action="store_true")
    parser.add_argument("--n-train", type=int, default=16000)
    parser.add_argument("--n-eval", type=int, default=4000)
    parser.add_argument("--l2", type=float, default=1e-2)
    parser.add_argument("--ref-steps", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--torch-lrs", type=float, nargs="+", default=[1e-4, 1e-3, 1e-2])
    parser.add_argument("--critic-steps", type=int, default=1500)
    add_device_args(parser)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    device, sync = setup_devices(args)  # --converge and --critics keep PyTorch on the CPU
    if args.step:
        bench_step(args, device, sync)
    if args.converge:
        bench_converge(args.n_train, args.n_eval, args.l2, args.ref_steps, args.epochs, args.torch_lrs)
    if args.critics:
        bench_critics(args.critic_steps)


if __name__ == "__main__":
    main()
