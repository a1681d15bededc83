"""Linear-CTC bank: all layers in one vmapped step vs one layer at a time (same run, ratio).

Synthetic cache at Whisper tiny.en scale: 5 hidden states x 384 dims, 40 phones, utterances
of 100-250 frames (2-5 s at 50 Hz), 2 learning rates. Times `ctc_per_bank` over all layers
once, and each layer alone one after another (``layer_chunk=1``: the per-layer loop a bank
replaces); both include feature packing and dev/test evaluation; the warm-up call that compiles
is excluded. The two alternate ``--repeats`` times (so a change in machine load hits both) and
the table gives medians; the ratio column is the median of the per-repeat ratios.

    python benchmarks/ctc_bank.py [--steps 60] [--utts 96] [--repeats 5]
"""

import argparse
import os
import platform
import time

import numpy as np

from speechmi_jax.estimators import ctc


def make_cache(num_utts, layers=5, dim=384, phones=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(100, 251, size=num_utts)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden = rng.normal(size=(layers, offsets[-1], dim)).astype(np.float16)
    targets = [rng.integers(0, phones, size=n // 6).astype(np.int32) for n in lengths]
    return hidden, offsets, targets


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--utts", type=int, default=96)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    hidden, offsets, targets = make_cache(args.utts)
    idx = np.arange(args.utts)
    n_tr, n_dv = int(0.6 * args.utts), int(0.2 * args.utts)
    splits = (ctc.CTCSplit(hidden, offsets, targets, idx[:n_tr], "train"),
              ctc.CTCSplit(hidden, offsets, targets, idx[n_tr:n_tr + n_dv], "dev"),
              ctc.CTCSplit(hidden, offsets, targets, idx[n_tr + n_dv:], "test"))
    kw = dict(num_phones=40, learning_rates=(1e-3, 1e-2), num_steps=args.steps, batch_size=16,
              eval_every=args.steps, num_bootstrap=100)

    def timed(fn):
        """(wall s, process CPU s) of one call."""
        t, c = time.perf_counter(), time.process_time()
        fn()
        return np.array([time.perf_counter() - t, time.process_time() - c])

    num_layers = hidden.shape[0]
    run_bank = lambda: ctc.ctc_per_bank(*splits, **kw)
    run_loop = lambda: ctc.ctc_per_bank(*splits, layer_chunk=1, **kw)
    run_bank(), run_loop()  # compile
    load = os.getloadavg()[0]
    bank, loop = [], []
    for r in range(args.repeats):
        pair = (run_bank, run_loop) if r % 2 == 0 else (run_loop, run_bank)
        first, second = timed(pair[0]), timed(pair[1])
        bank.append(first if r % 2 == 0 else second)
        loop.append(second if r % 2 == 0 else first)
        print(f"repeat {r}: bank wall {bank[-1][0]:.2f} s, cpu {bank[-1][1]:.2f} s; "
              f"alone wall {loop[-1][0]:.2f} s, cpu {loop[-1][1]:.2f} s", flush=True)
    bank, loop = np.array(bank), np.array(loop)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    print(f"{num_layers} layers x 2 lrs, {args.steps} steps, batch 16, {args.utts} utterances; "
          f"{os.cpu_count()} x {cpu}; load average {load:.1f} -> {os.getloadavg()[0]:.1f}; "
          f"medians of {args.repeats} alternating runs")
    print(f"| | bank ({num_layers} layers at once) | each layer alone | alone / bank |")
    print("| --- | --- | --- | --- |")
    for name, i in (("wall", 0), ("process CPU", 1)):
        print(f"| {name} | {np.median(bank[:, i]):.2f} s | {np.median(loop[:, i]):.2f} s | "
              f"{np.median(loop[:, i] / bank[:, i]):.2f}x |")


if __name__ == "__main__":
    main()
