"""Linear-CTC bank: all layers in one vmapped step vs one layer at a time (same run, ratio).

Synthetic cache at Whisper tiny.en scale: 5 hidden states x 384 dims, 40 phones, utterances
of 100-250 frames (2-5 s at 50 Hz), 2 learning rates. Times `ctc_per_bank` over all layers
once, and each layer alone one after another (``layer_chunk=1``: the per-layer loop a bank
replaces); both include dev/test evaluation; the warm-up call that compiles is excluded.

    python benchmarks/ctc_bank.py [--steps 60] [--utts 96]
"""

import argparse
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
        """(wall s, process CPU s) of the second call; the first one compiles."""
        fn()
        t, c = time.perf_counter(), time.process_time()
        fn()
        return np.array([time.perf_counter() - t, time.process_time() - c])

    num_layers = hidden.shape[0]
    bank = timed(lambda: ctc.ctc_per_bank(*splits, **kw))
    loop = timed(lambda: ctc.ctc_per_bank(*splits, layer_chunk=1, **kw))
    print(f"{num_layers} layers x 2 lrs, {args.steps} steps, batch 16, {args.utts} utterances")
    for name, i in (("wall", 0), ("cpu", 1)):
        print(f"  {name}: bank {bank[i]:.2f} s, per-layer loop {loop[i]:.2f} s, "
              f"loop / bank = {loop[i] / bank[i]:.2f}x")


if __name__ == "__main__":
    main()
