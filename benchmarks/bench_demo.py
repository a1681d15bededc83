"""The main job's cost: `speechmi demo` wall time and peak RSS from a cold cache, the share spent
in encoder forward passes vs estimators, and the encoder cost per hour of audio by model size.

    python benchmarks/bench_demo.py --out /tmp/bench_demo            # full demo (~10 min, 2 cores)
    python benchmarks/bench_demo.py --out /tmp/bench_demo --smoke    # quick check of the script
    python benchmarks/bench_demo.py --out /tmp/new --skip-encoders --rss-trace /tmp/rss.tsv --compare /tmp/old
    python benchmarks/bench_demo.py --out /tmp/x --skip-demo --skip-encoders --rss-table /tmp/rss.tsv
    python benchmarks/bench_demo.py --out /tmp/x --skip-demo --skip-encoders --cores-table /tmp/rss.tsv

Part 1 runs the demo in a subprocess (cold: a fresh run directory, so a fresh feature cache,
and ``SPEECHMI_CACHE`` at ``<out>.user-cache``, an empty user cache, so no XLA compilation cache;
``JAX_COMPILATION_CACHE_DIR`` is unset for the run) and
reads the per-stage timings the pipeline records in results.json. Part 2 times one jitted forward
pass (warm, median of repeats) of each encoder size on 2 x 10 s of audio and extrapolates to
one hour of audio: encoder-forward seconds per audio hour on this machine. Whisper encodes
30 s windows whatever the utterance length, so its cost is per 30 s window.

Peak RSS by stage: the demo process samples its own resident set (``VmRSS`` of
``/proc/self/status``, every 50 ms, in a thread) and labels each sample with the stage it
falls in: encoder / measure (from the pipeline's log) and, inside a measure, the step
(``features``, ``load`` = building a layer chunk's host arrays, ``fit`` = the bank's training
and evaluation, ``kmeans``, ``input_context``). It prints the peak of every encoder x measure
(the step that set it in brackets) and the stage that sets the process' peak; with
``--rss-trace FILE`` it writes every sample (seconds, MB, stage) as TSV while it runs, and
``--rss-table FILE`` prints the table of such a file again. Each sample also holds the process'
CPU seconds so far (user + system), and ``--cores-table FILE`` prints from such a file, per
encoder and measure, the wall seconds and the cores kept busy on average (CPU seconds / wall
seconds; 2.0 = both cores of the 2-core machine all the time). ``--compare OLD_RUN`` checks the
new results.json against an earlier run's: per measure, how many records are identical, the
largest difference and how many values leave the earlier run's CI.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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


RSS_PREFIX = "rss-stage\t"


def traced_demo(argv: list[str]) -> int:
    """Runs ``speechmi demo`` in this process while a thread samples VmRSS by stage; prints one
    ``rss-stage`` line per stage (peak MB, stage) at the end, and writes the samples to
    ``$SPEECHMI_RSS_TRACE`` if set."""
    import functools
    import logging
    import threading

    from speechmi_jax import cli, pipeline
    from speechmi_jax.estimators import api, ctc, train, views

    state = {"measure": "start", "step": ""}
    samples: list[tuple[float, float, str]] = []
    stop = threading.Event()

    def stage() -> str:
        return state["measure"] + (f"/{state['step']}" if state["step"] else "")

    def rss_mb() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def sample():
        t0 = time.perf_counter()
        out = open(os.environ["SPEECHMI_RSS_TRACE"], "w") if os.environ.get("SPEECHMI_RSS_TRACE") else None
        if out:
            out.write("seconds\trss_mb\tstage\tcpu_s\n")
        while not stop.is_set():
            samples.append((time.perf_counter() - t0, rss_mb(), stage()))
            if out:
                cpu = os.times()
                out.write("%.2f\t%.0f\t%s" % samples[-1] + "\t%.2f\n" % (cpu.user + cpu.system))
                out.flush()
            stop.wait(0.05)
        if out:
            out.close()

    class Stage(logging.Handler):
        def emit(self, record):
            msg = record.getMessage()
            if record.name == "speechmi_jax.pipeline":
                state["measure"], state["step"] = msg.replace(": ", "/", 1), ""

    def step(name, fn, label=None):
        @functools.wraps(fn)
        def wrapped(*a, **k):
            before = state["step"]
            state["step"] = label(*a, **k) if label else name
            try:
                return fn(*a, **k)
            finally:
                state["step"] = before
        return wrapped

    def features_label(enc, *a, **k):
        # the name the config gives the encoder (a zoo model's own name is its folder)
        state["measure"] = state.get("encoder", enc.name)
        return "features"

    def configured(name, *a, **k):
        state["encoder"] = name
        return configured_encoder(name, *a, **k)

    log = logging.getLogger("speechmi_jax.pipeline")
    log.setLevel(logging.INFO)
    log.addHandler(Stage())
    pipeline.extract_features = step("features", pipeline.extract_features, features_label)
    configured_encoder, pipeline.configured_encoder = pipeline.configured_encoder, configured
    train.fit_bank = step("fit", train.fit_bank)
    ctc._padded_splits = step("load", ctc._padded_splits)
    api.load_rows = step("load", api.load_rows)
    views.kmeans_codes = step("kmeans", views.kmeans_codes)
    views.input_context = step("input_context", views.input_context)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        return cli.main(argv)
    finally:
        stop.set()
        thread.join()
        peaks: dict[str, float] = {}
        for _, mb, st in samples:
            peaks[st] = max(peaks.get(st, 0.0), mb)
        for st, mb in peaks.items():
            print(f"{RSS_PREFIX}{mb:.0f}\t{st}", flush=True)


def run_demo(out: Path, smoke: bool, trace: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--traced-demo", "demo", "--out", str(out),
           "--set", "progress=False"] + (["--smoke"] if smoke else [])
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    env["SPEECHMI_CACHE"] = str(out.with_name(out.name + ".user-cache"))  # cold: a new one
    if trace:
        env["SPEECHMI_RSS_TRACE"] = str(trace)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"demo failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    meta = json.loads((out / "results.json").read_text())["metadata"]
    timings = meta["timings_s"]
    passes = ("features_s", "masked_features_s")  # the encoder's clean and masked passes
    feat = sum(t.get(k, 0.0) for t in timings.values() for k in passes)
    est = sum(v for t in timings.values() for k, v in t.items() if k not in passes)
    stages = [line[len(RSS_PREFIX):].split("\t", 1) for line in proc.stdout.splitlines()
              if line.startswith(RSS_PREFIX)]
    return {"wall_s": wall, "peak_rss_mb": peak_mb, "features_s": feat, "estimators_s": est,
            "per_encoder": timings, "corpus": meta["corpus"],
            "rss_by_stage": [(float(mb), st) for mb, st in stages]}


def print_rss_table(by_stage: list[tuple[float, str]]):
    """Peak RSS (MB) per encoder x stage from (peak MB, "encoder/measure[/step]") pairs, the
    step that set each cell in brackets, and the process' peak."""
    # "whisper-tiny.en@4s" (an encoder's own name, with its window) -> the config's name; a zoo
    # model's "@step0" stays
    enc_name = lambda e: re.sub(r"@[0-9.]+s$", "", e)
    table: dict[str, dict[str, tuple[float, str]]] = {}
    for mb, st in by_stage:
        enc, _, rest = st.partition("/")
        if not rest:
            continue  # before the first encoder
        measure, _, step = rest.partition("/")
        cell = table.setdefault(enc_name(enc), {})
        if mb > cell.get(measure, (0.0, ""))[0]:
            cell[measure] = (mb, step)
    measures = list(dict.fromkeys(m for cells in table.values() for m in cells))
    top = max(by_stage)
    print(f"peak RSS (MB) by encoder and stage, VmRSS sampled every 50 ms; in brackets the step "
          f"that set it; process peak {top[0]:.0f} MB in {top[1]}:")
    print("| encoder | " + " | ".join(measures) + " | encoder's peak |")
    print("| --- |" + " --- |" * (len(measures) + 1))
    for enc, cells in table.items():
        row = [f"{cells[m][0]:.0f}" + (f" ({cells[m][1]})" if cells[m][1] else "") if m in cells
               else "" for m in measures]
        print(f"| {enc} | " + " | ".join(row) + f" | {max(v[0] for v in cells.values()):.0f} |")


def read_trace(path: str) -> list[list[str]]:
    """The rows of a ``--rss-trace`` file (seconds, rss_mb, stage[, cpu_s]), header dropped."""
    return [line.rstrip("\n").split("\t") for line in open(path)][1:]


def print_cores_table(rows: list[tuple[float, str, float]]):
    """Wall seconds and mean cores busy per encoder x measure from (seconds, stage, CPU
    seconds) samples in time order; a sample's interval counts for the stage it was taken in."""
    cells: dict[tuple[str, str], list[float]] = {}
    for (t0, st, c0), (t1, _, c1) in zip(rows, rows[1:]):
        enc, _, rest = st.partition("/")
        measure = rest.partition("/")[0] or "(start)"
        cell = cells.setdefault((enc, measure), [0.0, 0.0])
        cell[0] += t1 - t0
        cell[1] += c1 - c0
    wall, cpu = rows[-1][0] - rows[0][0], rows[-1][2] - rows[0][2]
    print(f"wall seconds and mean cores busy (CPU s / wall s) by encoder and measure; whole run "
          f"{wall:.0f} s, {cpu:.0f} CPU s, {cpu / wall:.2f} cores:")
    print("| encoder | measure | wall s | cores busy |")
    print("| --- | --- | --- | --- |")
    for (enc, measure), (w, c) in cells.items():
        print(f"| {enc} | {measure} | {w:.0f} | {c / w:.2f} |" if w else f"| {enc} | {measure} | 0 | - |")


def compare_results(new: Path, old: Path):
    """Prints how the records of run ``new`` differ from those of run ``old`` (results.json):
    per measure the largest |difference| and how many new values leave the old CI
    (``results.measure_summary``)."""
    from speechmi_jax.analysis import results

    a, b = results.read_results(old), results.read_results(new)
    comparison = results.compare_results(a, b)
    if comparison.only_a or comparison.only_b:
        print(f"records differ: only in {old}: {comparison.only_a[:5]}, "
              f"only in {new}: {comparison.only_b[:5]}")
    print(f"results vs {old}:")
    print("| measure | records | identical | max abs diff | outside the old CI |")
    print("| --- | --- | --- | --- | --- |")
    for r in sorted(results.measure_summary(a, b), key=lambda r: r["measure"]):
        if r["records"] > r["missing_before"]:
            print(f"| {r['measure']} | {r['records'] - r['missing_before']} | {r['identical']} | "
                  f"{r['max_abs_diff']:.3g} | {r['outside_old_ci']} |")


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
    if sys.argv[1:2] == ["--traced-demo"]:
        sys.path.insert(0, os.getcwd())  # the checkout the benchmark runs from
        raise SystemExit(traced_demo(sys.argv[2:]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="run directory for the demo (must not exist)")
    ap.add_argument("--smoke", action="store_true", help="demo --smoke and two small encoders")
    ap.add_argument("--skip-demo", action="store_true")
    ap.add_argument("--skip-encoders", action="store_true", help="the demo only (no part 2)")
    ap.add_argument("--rss-trace", help="write the demo's RSS samples (seconds, MB, stage) here")
    ap.add_argument("--compare", help="a previous demo run directory: compare its results.json")
    ap.add_argument("--rss-table", help="print the peak-RSS table of a --rss-trace file")
    ap.add_argument("--cores-table", help="print wall seconds and cores busy per stage of a --rss-trace file")
    args = ap.parse_args()
    out = Path(args.out)
    print(f"machine: {os.cpu_count()} cores, {cpu_name()}")
    if not args.skip_demo:
        if out.exists():
            raise SystemExit(f"{out} exists: the demo must start cold")
        print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        d = run_demo(out, args.smoke, args.rss_trace)
        total = d["features_s"] + d["estimators_s"]
        print(f"demo{' --smoke' if args.smoke else ''}: wall {d['wall_s']:.0f} s, peak RSS "
              f"{d['peak_rss_mb']:.0f} MB; corpus {d['corpus']['utterances']} utterances, "
              f"{d['corpus']['hours'] * 60:.1f} min")
        print(f"  encoder forward (feature extraction) {d['features_s']:.0f} s "
              f"({100 * d['features_s'] / total:.0f} %), estimators {d['estimators_s']:.0f} s "
              f"({100 * d['estimators_s'] / total:.0f} %)")
        for enc, t in d["per_encoder"].items():
            print("  " + enc + ": " + ", ".join(f"{k} {v:.0f}" for k, v in t.items()))
        print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
        if d["rss_by_stage"]:
            print_rss_table(d["rss_by_stage"])
    if args.rss_table:
        rows = read_trace(args.rss_table)
        peaks: dict[str, float] = {}
        for _, mb, st, *_ in rows:
            peaks[st] = max(peaks.get(st, 0.0), float(mb))
        print_rss_table([(mb, st) for st, mb in peaks.items()])
    if args.cores_table:
        rows = read_trace(args.cores_table)
        if not rows or len(rows[0]) < 4:
            raise SystemExit(f"{args.cores_table}: no cpu_s column (a trace written before it was added)")
        print_cores_table([(float(t), st, float(c)) for t, _, st, c in rows])
    if args.compare:
        compare_results(out, Path(args.compare))
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
