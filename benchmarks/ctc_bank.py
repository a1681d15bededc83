"""Linear-CTC bank: its padding, its cost against an earlier version or one layer at a time,
and (against an earlier version) every layer's PER from both.

Data: with ``--encoders``, each encoder's feature cache of the bundled corpus (extracted into
``--cache-dir`` if not there yet; Whisper in the demo's 4 s window) with the CTC measure's
targets and split (phone segments; utterances without phones left out); else a synthetic cache
at Whisper tiny.en scale (5 hidden states x 384 dims, 40 phones, ``--utts`` utterances of
100-250 frames).

For each encoder it prints the layout (``ctc.packing``: the training buckets, how many
utterances a step draws from each, and the held-out rows) and padding's share of the frames a
run processes, against every utterance padded to the longest; then times ``ctc_per_bank``
over all layers against

* ``--baseline REV``: the bank of ``speechmi_jax/estimators/ctc.py`` at git revision REV on the
  same data (the rest of the package is this checkout's, so REV must be 4b3a507 or later: an
  earlier ``ctc.py`` asks the bank for the layer map it no longer has; compare older revisions
  by running this script without ``--baseline`` in a checkout of each), and prints every
  layer's test PER [95 % CI] from both for each of ``--seeds`` (the minibatch order); or,
  without it,
* each layer alone, one after another (``layer_chunk=1``: the per-layer loop a bank replaces).

The first call of each, which compiles, runs in a fresh process (so neither reuses the other's
compilations): its wall and process CPU time and its XLA compilations. Then the two alternate
``--repeats`` times in this process (a change in machine load hits both); medians, and the
median of the per-repeat ratios. All timings include feature packing and dev/test evaluation.

    python benchmarks/ctc_bank.py --encoders melapc-4x256 whisper-tiny.en logmel \
        --cache-dir CACHE --baseline REV --steps 400 --lrs 1e-3 3e-2 --seeds 0 1 2 --repeats 2
    python benchmarks/ctc_bank.py --steps 40 --utts 64 --repeats 5
"""

import argparse
import collections
import dataclasses
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from speechmi_jax.estimators import ctc

COMPILES = collections.Counter()


def _count_compile(name, secs, **kw):
    if name.endswith("backend_compile_duration"):
        COMPILES.update({"n": 1, "s": secs})


jax.monitoring.register_event_duration_secs_listener(_count_compile)


def synthetic_splits(num_utts, layers=5, dim=384, phones=40, seed=0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(100, 251, size=num_utts)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    hidden = rng.normal(size=(layers, offsets[-1], dim)).astype(np.float16)
    targets = [rng.integers(0, phones, size=n // 6).astype(np.int32) for n in lengths]
    idx = np.arange(num_utts)
    n_tr, n_dv = int(0.6 * num_utts), int(0.2 * num_utts)
    return (ctc.CTCSplit(hidden, offsets, targets, idx[:n_tr], "train"),
            ctc.CTCSplit(hidden, offsets, targets, idx[n_tr:n_tr + n_dv], "dev"),
            ctc.CTCSplit(hidden, offsets, targets, idx[n_tr + n_dv:], "test")), phones


def cache_splits(encoder, cache_dir):
    """The CTC measure's splits of ``encoder``'s features of the bundled corpus (as
    measures.ctc_per), and the encoder's frame rate."""
    from speechmi_jax import features, measures
    from speechmi_jax.data.corpus import load_corpus
    from speechmi_jax.encoders.registry import load_encoder
    corpus = load_corpus("bundled")
    enc = load_encoder(encoder, window_seconds=4.0 if encoder.startswith("whisper") else None)
    fs = features.extract_features(enc, corpus, cache_dir, progress=False)
    targets = measures.ctc_targets(fs, corpus)
    keep = lambda s: dataclasses.replace(s, utts=s.utts[[targets[u].size > 0 for u in s.utts]])
    splits = ctc.splits_from_features(fs, targets=targets)
    return tuple(keep(s) for s in splits), len(fs.phone_set), enc.frame_rate


def baseline_module(rev):
    """ctc.py as it was at git revision ``rev``, imported as its own module."""
    root = Path(__file__).resolve().parents[1]
    src = subprocess.check_output(["git", "-C", str(root), "show", f"{rev}:speechmi_jax/estimators/ctc.py"])
    path = Path(tempfile.mkdtemp()) / "ctc_baseline.py"
    path.write_bytes(src)
    spec = importlib.util.spec_from_file_location("ctc_baseline", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def timed(fn):
    """(result, [wall s, process CPU s, XLA compilations, their wall s]) of one call."""
    before = dict(COMPILES)
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, [time.perf_counter() - t, time.process_time() - c, COMPILES["n"] - before.get("n", 0),
                 COMPILES["s"] - before.get("s", 0.0)]


def print_packing(splits, num_phones, kw):
    pk = ctc.packing(*splits, num_phones=num_phones, batch_size=kw["batch_size"], num_steps=kw["num_steps"],
                     eval_every=kw["eval_every"])
    print(f"buckets (frames T_b, labels S_b, drawn a step m_b): {pk.buckets}, training utterances "
          f"{pk.counts}; held-out rows of {pk.frames[1]} frames: dev {pk.rows[1]}, test {pk.rows[2]}")
    for name, real, proc in zip(("train, a step", "dev, a pass", "test, a pass"), pk.real, pk.processed):
        print(f"  {name}: {real:.0f} real frames, {proc} processed, padding {100 * (1 - real / proc):.1f} %")
    print(f"padding share of the frames a run processes: {100 * pk.padding_share:.1f} % "
          f"(every utterance padded to the longest: {100 * pk.longest_share:.1f} %)")


def variants(args, splits, kw):
    """{name: fn() -> per-layer results}: this checkout's bank, and the baseline or a layer at a time."""
    this = lambda: ctc.ctc_per_bank(*splits, **kw)
    if args.baseline:
        old = baseline_module(args.baseline)
        return {"this checkout": this, f"at {args.baseline}": lambda: old.ctc_per_bank(*splits, **kw)}
    return {f"bank ({splits[0].hidden.shape[0]} layers at once)": this,
            "each layer alone": lambda: ctc.ctc_per_bank(*splits, layer_chunk=1, **kw)}


def first_calls(names, encoder):
    """Each variant's first call in a fresh process (this script with --first-call)."""
    out = {}
    for i, name in enumerate(names):
        argv = [*sys.argv[1:], "--first-call", str(i)] + (["--encoders", encoder] if encoder else [])
        res = subprocess.run([sys.executable, __file__, *argv], check=True, capture_output=True, text=True)
        out[name] = json.loads(res.stdout.strip().splitlines()[-1])
    return out


def time_repeats(fns, repeats):
    """[repeats, 2 variants, (wall, CPU)], alternating which runs first."""
    names = list(fns)
    fns[names[0]](), fns[names[1]]()  # compile in this process
    out = []
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]
        got = {n: timed(fns[n])[1][:2] for n in order}
        out.append([got[n] for n in names])
        print(f"repeat {r}: " + "; ".join(f"{n} wall {w:.2f} s, cpu {c:.2f} s" for n, (w, c) in got.items()),
              flush=True)
    return np.array(out).reshape(-1, 2, 2)


def print_timings(names, first, reps):
    a, b = names
    print(f"| | {a} | {b} | {b} / {a} |")
    print("| --- | --- | --- | --- |")
    for name, i in (("first call, wall", 0), ("first call, process CPU", 1)):
        print(f"| {name} | {first[a][i]:.1f} s | {first[b][i]:.1f} s | {first[b][i] / first[a][i]:.2f}x |")
    print(f"| first call, XLA compilations (their wall s) | {first[a][2]} ({first[a][3]:.1f} s) | "
          f"{first[b][2]} ({first[b][3]:.1f} s) | |")
    for name, i in (("wall", 0), ("process CPU", 1)):
        if len(reps):
            print(f"| {name}, median of {len(reps)} | {np.median(reps[:, 0, i]):.2f} s | "
                  f"{np.median(reps[:, 1, i]):.2f} s | {np.median(reps[:, 1, i] / reps[:, 0, i]):.2f}x |")


def print_pers(names, by_seed):
    """Per layer and seed: old PER [CI], new PER [CI], whether the new one lies in the old CI."""
    new, old = names
    first = by_seed[0][1][new]
    r0 = first[0]
    print(f"PER % [95 % CI] per layer, test set ({r0.num_test_utts} utterances, {r0.num_test_phones} "
          f"phones); lr and step chosen on dev:")
    print(f"| layer | seed | {old} | {new} | new in old CI |")
    print("| --- | --- | --- | --- | --- |")
    fmt = lambda r: f"{r.per:.1f} [{r.ci[0]:.1f}, {r.ci[1]:.1f}] ({r.lr:g}, {r.step})"
    for layer in range(len(first)):
        for seed, res in by_seed:
            a, b = res[old][layer], res[new][layer]
            inside = "yes" if a.ci[0] <= b.per <= a.ci[1] else "no"
            print(f"| {a.layer} | {seed} | {fmt(a)} | {fmt(b)} | {inside} |")


def run(args, splits, num_phones, data, encoder=None):
    kw = dict(num_phones=num_phones, learning_rates=tuple(args.lrs), num_steps=args.steps,
              batch_size=args.batch_size, eval_every=args.eval_every or args.steps,
              num_bootstrap=1000, seed=args.seeds[0])
    if args.first_call is not None:
        fn = list(variants(args, splits, kw).values())[args.first_call]
        print(json.dumps(timed(fn)[1]))
        return
    print(f"## {data}: {splits[0].hidden.shape[0]} hidden states x {splits[0].hidden.shape[2]}, "
          f"{len(args.lrs)} lrs, {args.steps} steps, batch {args.batch_size}", flush=True)
    print_packing(splits, num_phones, kw)
    fns = variants(args, splits, kw)
    names = list(fns)
    load = os.getloadavg()[0]
    first = first_calls(names, encoder)
    reps = time_repeats(fns, args.repeats) if args.repeats else np.zeros((0, 2, 2))
    print(f"load average {load:.1f} -> {os.getloadavg()[0]:.1f}")
    print_timings(names, first, reps)
    if args.baseline:
        by_seed = []
        for seed in args.seeds:
            kw["seed"] = seed
            by_seed.append((seed, {n: f() for n, f in variants(args, splits, kw).items()}))
        print_pers(names, by_seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--encoders", nargs="+", help="encoders whose bundled-corpus features to use")
    ap.add_argument("--cache-dir", default="cache", help="their feature cache")
    ap.add_argument("--utts", type=int, default=96, help="synthetic utterances (without --encoders)")
    ap.add_argument("--baseline", help="git revision whose ctc.py to compare against")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 1e-2])
    ap.add_argument("--eval-every", type=int, default=None, help="default: --steps")
    ap.add_argument("--repeats", type=int, default=5, help="0: the first calls only")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="the banks' seeds (PER table)")
    ap.add_argument("--first-call", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.first_call is None:
        cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                    if line.startswith("model name")), platform.processor())
        print(f"{os.cpu_count()} x {cpu}; load average {os.getloadavg()[0]:.1f}")
    if not args.encoders:
        splits, num_phones = synthetic_splits(args.utts)
        return run(args, splits, num_phones, f"synthetic, {args.utts} utterances")
    for name in args.encoders:
        splits, num_phones, rate = cache_splits(name, args.cache_dir)
        run(args, splits, num_phones, f"{name} ({rate:g} Hz), bundled corpus", name)


if __name__ == "__main__":
    main()
