"""The main job's cost: `speechmi demo` wall time and peak RSS from a cold cache, the share spent
in encoder forward passes vs estimators, and the encoder cost per hour of audio by model size.

    python benchmarks/bench_demo.py --out /tmp/bench_demo            # full demo (~10 min, 2 cores)
    python benchmarks/bench_demo.py --out /tmp/bench_demo --smoke    # quick check of the script

Part 1 runs the demo in a subprocess (cold: a fresh run directory, so a fresh feature cache
and XLA compilation cache under it; ``JAX_COMPILATION_CACHE_DIR`` is unset for the run) and
reads the per-stage timings the pipeline records in results.json. Part 2 times one jitted forward
pass (warm, median of repeats) of each encoder size on 2 x 10 s of audio and extrapolates to
one hour of audio: encoder-forward seconds per audio hour on this machine. Whisper encodes
30 s windows whatever the utterance length, so its cost is per 30 s window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_demo(out: Path, smoke: bool) -> dict:
    cmd = [sys.executable, "-m", "speechmi_jax.cli", "demo", "--out", str(out),
           "--set", "progress=False"] + (["--smoke"] if smoke else [])
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    meta = json.loads((out / "results.json").read_text())["metadata"]
    timings = meta["timings_s"]
    feat = sum(t.get("features_s", 0.0) for t in timings.values())
    est = sum(v for t in timings.values() for k, v in t.items() if k != "features_s")
    return {"wall_s": wall, "peak_rss_mb": peak_mb, "features_s": feat, "estimators_s": est,
            "per_encoder": timings, "corpus": meta["corpus"]}


def encoder_cost(names, batch: int = 2, seconds: float = 10.0, repeats: int = 3) -> list[dict]:
    import jax

    from speechmi_jax import load_encoder

    rows = []
    rng = np.random.default_rng(0)
    wav = rng.standard_normal((batch, int(seconds * 16000))).astype(np.float32) * 0.1
    lengths = np.full((batch,), wav.shape[1], np.int32)
    for name in names:
        enc = load_encoder(name)
        jax.block_until_ready(enc(wav, lengths).hidden_states)  # compile
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(enc(wav, lengths).hidden_states)
            times.append(time.perf_counter() - t0)
        t = float(np.median(times))
        rows.append({"encoder": name, "layers": enc.num_layers, "dim": enc.hidden_size,
                     "forward_s": t, "audio_s": batch * seconds,
                     "s_per_audio_hour": t / (batch * seconds) * 3600})
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run directory for the demo (must not exist)")
    ap.add_argument("--smoke", action="store_true", help="demo --smoke and two small encoders")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-encoders", action="store_true", help="the demo only (no part 2)")
    args = ap.parse_args()
    out = Path(args.out)
    print(f"machine: {os.cpu_count()} cores, {cpu_name()}")
    if not args.skip_demo:
        if out.exists():
            raise SystemExit(f"{out} exists: the demo must start cold")
        d = run_demo(out, args.smoke)
        total = d["features_s"] + d["estimators_s"]
        print(f"demo{' --smoke' if args.smoke else ''}: wall {d['wall_s']:.0f} s, peak RSS "
              f"{d['peak_rss_mb']:.0f} MB; corpus {d['corpus']['utterances']} utterances, "
              f"{d['corpus']['hours'] * 60:.1f} min")
        print(f"  encoder forward (feature extraction) {d['features_s']:.0f} s "
              f"({100 * d['features_s'] / total:.0f} %), estimators {d['estimators_s']:.0f} s "
              f"({100 * d['estimators_s'] / total:.0f} %)")
        for enc, t in d["per_encoder"].items():
            print("  " + enc + ": " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
    if args.skip_encoders:
        return
    names = (["logmel", "random:whisper-tiny"] if args.smoke else
             ["logmel", "mfcc", "random:whisper-tiny", "random:whisper-base", "random:hubert-base",
              "random:wav2vec2-large"])
    print("encoder forward cost (2 x 10 s, warm, median of 3):")
    print("| encoder | layers x dim | s per audio hour |")
    print("| --- | --- | --- |")
    for r in encoder_cost(names):
        print(f"| {r['encoder']} | {r['layers']} x {r['dim']} | {r['s_per_audio_hour']:.0f} |")


if __name__ == "__main__":
    main()
