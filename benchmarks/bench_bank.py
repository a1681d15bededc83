"""Speed of the estimator bank, and how close each InfoNCE critic gets to a known MI.

Three parts (each its own flag; results go to BENCHMARKS.md, "Estimator bank"):

--step      One banked Adam step of 13 layers x 8 probes (D=768, 40 classes, batch 4096) vs
            (i) the same 104 probes each as its own jitted step in a Python loop and (ii) a
            PyTorch loop of one nn.Linear + Adam per probe (s3prl-style). GFLOP/s against a
            float32 matmul peak measured in the same run.
--converge  Time until all 13 layers' probe bounds are within 0.01 bits of a long-run reference:
            the bank with full-batch L-BFGS vs PyTorch minibatch Adam epochs (one probe per layer).
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

L, P, D, C, B = 13, 8, 768, 40, 4096


def _time(fn, repeats: int) -> float:
    """Median seconds of fn() (which must block) after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_peak() -> float:
    """GFLOP/s of a float32 2048^3 matmul (the machine's practical peak)."""
    n = 2048
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    return 2 * n**3 / _time(lambda: f(a).block_until_ready(), 5) / 1e9


def bench_step():
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

    t_bank = _time(banked, 5)

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

    t_loop = _time(looped, 3)

    # (ii) PyTorch: one nn.Linear + Adam per probe.
    import torch

    torch.manual_seed(0)
    tx = [torch.from_numpy(np.asarray(x[l])) for l in range(L)]
    ty = torch.from_numpy(np.asarray(y)).long()
    heads = [torch.nn.Linear(D, C) for _ in range(L * P)]
    opts = [torch.optim.Adam(h.parameters(), lr=1e-3) for h in heads]

    def torch_loop():
        for i, (h, o) in enumerate(zip(heads, opts)):
            o.zero_grad()
            torch.nn.functional.cross_entropy(h(tx[i // P]), ty).backward()
            o.step()

    t_torch = _time(torch_loop, 3)
    peak = matmul_peak()
    print(f"torch threads {torch.get_num_threads()}; float32 matmul peak {peak:.1f} GFLOP/s")
    print("| implementation | s / step (104 probes) | GFLOP/s | % of matmul peak | time / bank |")
    print("| --- | --- | --- | --- | --- |")
    for name, t in [("bank (one jitted vmapped step)", t_bank), ("per-probe jitted steps, Python loop", t_loop),
                    ("PyTorch nn.Linear + Adam per probe", t_torch)]:
        g = flops / t / 1e9
        print(f"| {name} | {t:.3f} | {g:.1f} | {100 * g / peak:.0f} % | {t / t_bank:.2f}x |")


def _layers(n: int, seed: int):
    """13 layers of one 40-class task: layer l keeps a fraction of the class signal."""
    priors, means = known.class_gaussians(C, D, separation=0.12, seed=0)
    z, y = known.sample_classes(priors, means, n, seed)
    noise = np.random.default_rng(seed + 100).normal(size=(L, n, D)).astype(np.float32)
    scale = np.linspace(0.3, 1.5, L).astype(np.float32)[:, None, None]
    return z[None] * scale + noise * 0.5, y


def bench_converge(n_train: int, n_eval: int, ref_steps: int):
    z, y = _layers(n_train + 2 * n_eval, seed=1)
    split = np.repeat(["train", "dev", "test"], [n_train, n_eval, n_eval])
    groups = np.arange(split.size) // 50
    common = dict(devices=jax.devices()[:1], num_bootstrap=10)
    ref = np.array([e.bits for e in api.probe_bank(z, y, groups, split, steps=ref_steps, eval_every=5, **common)])
    print(f"reference (L-BFGS, {ref_steps} steps):", np.round(ref, 3).tolist())

    print("| method | setting | wall s | max abs error vs reference (bits) |")
    print("| --- | --- | --- | --- |")
    bank_time = None
    for steps in (10, 20, 40):
        t = time.perf_counter()
        est = np.array([e.bits for e in api.probe_bank(z, y, groups, split, steps=steps, eval_every=5, **common)])
        wall = time.perf_counter() - t
        err = np.abs(est - ref).max()
        print(f"| bank, full-batch L-BFGS | {steps} steps (incl. compile) | {wall:.1f} | {err:.4f} |")
        if err < 0.01:
            bank_time = wall
            break

    import torch

    torch.manual_seed(0)
    idx = {s: np.flatnonzero(split == s) for s in ("train", "dev", "test")}
    mean, std = z[:, idx["train"]].mean(1, keepdims=True), z[:, idx["train"]].std(1, keepdims=True)
    zt = torch.from_numpy((z - mean) / std)
    yt = torch.from_numpy(y).long()
    h_y = probe.label_entropy(y[idx["test"]], C)
    heads = [torch.nn.Linear(D, C) for _ in range(L)]
    opts = [torch.optim.Adam(h.parameters(), lr=1e-3) for h in heads]
    best_dev = np.full(L, np.inf)
    best_bits = np.zeros(L)
    t0, torch_time = time.perf_counter(), None
    tr = torch.from_numpy(idx["train"])
    for epoch in range(1, 21):
        perm = tr[torch.randperm(tr.numel())]
        for l, (h, o) in enumerate(zip(heads, opts)):
            for s in range(0, perm.numel(), 256):
                b = perm[s:s + 256]
                o.zero_grad()
                torch.nn.functional.cross_entropy(h(zt[l, b]), yt[b]).backward()
                o.step()
        with torch.no_grad():
            for l, h in enumerate(heads):
                dev = torch.nn.functional.cross_entropy(h(zt[l, idx["dev"]]), yt[idx["dev"]]).item()
                if dev < best_dev[l]:
                    best_dev[l] = dev
                    ce = torch.nn.functional.cross_entropy(h(zt[l, idx["test"]]), yt[idx["test"]]).item()
                    best_bits[l] = units.nats_to_bits(h_y - ce)
        err = np.abs(best_bits - ref).max()
        wall = time.perf_counter() - t0
        print(f"| PyTorch minibatch Adam (bs 256, lr 1e-3, dev early stop) | epoch {epoch} | {wall:.1f} | {err:.4f} |")
        if err < 0.01:
            torch_time = wall
            break
    if bank_time and torch_time:
        print(f"time to within 0.01 bits: PyTorch / bank = {torch_time / bank_time:.2f}x")


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
    parser.add_argument("--n-train", type=int, default=8000)
    parser.add_argument("--n-eval", type=int, default=2000)
    parser.add_argument("--ref-steps", type=int, default=150)
    parser.add_argument("--critic-steps", type=int, default=1500)
    args = parser.parse_args()
    print(f"devices: {jax.devices()}")
    if args.step:
        bench_step()
    if args.converge:
        bench_converge(args.n_train, args.n_eval, args.ref_steps)
    if args.critics:
        bench_critics(args.critic_steps)


if __name__ == "__main__":
    main()
