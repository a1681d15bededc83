"""The rank-based label-free measures of a run (``rankme``, ``alpha_req``, ``lidar``,
``cca_logmel``): per measure, encoder and layer the value [95 % CI], and the measure's wall
seconds per encoder; optionally the utterance bootstrap recomputed beside the linearised one.

    speechmi demo --out RUN --set "encoders=['whisper-tiny.en','logmel']" \\
        --set "measures=['rankme','alpha_req','lidar','cca_logmel']" --set progress=False
    python benchmarks/rank_table.py RUN [--cost] [--recompute B]

``--cost``: each measure recomputed from the run's cached features, with its CPU seconds
(``time.process_time``: on a shared machine the figure the load does not inflate, unless
BLAS threads spin against other jobs: run with ``OPENBLAS_NUM_THREADS=1`` there) and wall
seconds per encoder.

``--recompute B``: for rankme, alpha_req and lidar of every encoder in the run's feature cache,
B bootstrap replicates *recomputed* (each replicate's utterance counts as row weights: one
eigendecomposition per replicate and layer) on the measure's own test frames, printed beside
the run's linearised interval: the recomputed percentile interval and the replicates' mean
minus the estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechmi_jax.analysis import results  # noqa: E402
from speechmi_jax.analysis.formatting import fmt_ci  # noqa: E402

RANK = ("rankme", "alpha_req", "lidar", "cca_logmel")


def table(res) -> None:
    ms = [m for m in RANK if m in res.measures()]
    layers = max(len(res.layers(e)) for e in res.encoders())
    timings = res.metadata.get("timings_s", {})
    print("| measure | encoder | " + " | ".join(f"layer {l}" for l in range(layers))
          + " | seconds |")
    print("|---|---|" + "---|" * layers + "---|")
    for m in ms:
        for enc in res.encoders():
            recs = res.series(enc, m)
            if not recs:
                continue
            cells = [fmt_ci(r) for r in recs] + [""] * (layers - len(recs))
            secs = timings.get(enc, {}).get(f"{m}_s")
            print(f"| `{m}` | {enc} | " + " | ".join(cells)
                  + f" | {'' if secs is None else f'{secs:.1f}'} |")


def _run_inputs(run_dir: Path, res):
    """(config, [(encoder, Inputs)]) of the run: each encoder's cached features (and log-mel
    input), found through its saved parts' keys."""
    import ml_collections

    from speechmi_jax import measures
    from speechmi_jax.features import load_features

    config = ml_collections.ConfigDict(json.loads((run_dir / "config.json").read_text()))
    cache = Path(config.cache_dir or run_dir / "cache")
    out = []
    for enc in res.encoders():
        keys = {m: json.loads(p.read_text())["key"]
                for m in RANK if (p := run_dir / "parts" / f"{measures.file_name(enc)}__{m}.json").exists()}
        if not keys:
            continue
        key = next(iter(keys.values()))
        mel = next((k["input_features"] for k in keys.values() if k["input_features"]), None)
        out.append((enc, measures.Inputs(
            encoder=enc, fs=load_features(cache / key["features"]), corpus=None, config=config,
            checkpoint_dir="", input_features=None if mel is None else load_features(cache / mel))))
    return config, out


def cost(run_dir: Path, res) -> None:
    from speechmi_jax import measures
    _, inputs = _run_inputs(run_dir, res)
    print("\n| encoder | layers x D | test frames | " + " | ".join(f"`{m}` CPU s (wall s)" for m in RANK)
          + " |")
    print("|---|---|---|" + "---|" * len(RANK))
    for enc, x in inputs:
        cells = []
        for m in RANK:
            if m == "cca_logmel" and x.input_features is None:
                cells.append("")
                continue
            t0, c0 = time.perf_counter(), time.process_time()
            measures.REGISTRY[m].compute(x)
            cells.append(f"{time.process_time() - c0:.2f} ({time.perf_counter() - t0:.1f})")
        shape = x.fs.hidden.shape
        print(f"| {enc} | {shape[0]} x {shape[2]} | {int(np.sum(x.splits == 'test'))} | "
              + " | ".join(cells) + " |", flush=True)


def recompute(run_dir: Path, res, num_replicates: int) -> None:
    from speechmi_jax import measures
    from speechmi_jax.estimators import bootstrap, spectral, views

    config, inputs = _run_inputs(run_dir, res)
    print(f"\n| measure | encoder | layer | linearised CI (run) | recomputed CI ({num_replicates}) "
          "| recomputed mean - estimate | seconds |")
    print("|---|---|---|---|---|---|---|")
    for enc, x in inputs:
        fs = x.fs
        rows = measures._split_rows(x, "test", 3)            # the measure's own test frames
        k = max(1, int(round(config.spectral.lidar_shift_s * fs.encoder["frame_rate"])))
        ia, ib, _ = views.shift_pairs(fs.utt_offsets, k)
        keep = np.isin(ia, measures._split_rows(x, "test", 4, ia))
        ia, ib = ia[keep], ib[keep]
        for m, groups, stat in (
                ("rankme", fs.utt_index[rows],
                 lambda l, w: spectral.rankme(np.asarray(fs.hidden[l, rows], np.float32), weights=w)),
                ("alpha_req", fs.utt_index[rows],
                 lambda l, w: spectral.alpha_req(np.asarray(fs.hidden[l, rows], np.float32),
                                                 ranks=tuple(config.spectral.alpha_ranks), weights=w)),
                ("lidar", fs.utt_index[ia],
                 lambda l, w: spectral.lidar(np.stack([np.asarray(fs.hidden[l, ia], np.float32),
                                                       np.asarray(fs.hidden[l, ib], np.float32)], 1),
                                             delta=config.spectral.lidar_delta, weights=w))):
            dense = bootstrap.group_index(groups)
            counts = bootstrap.replicate_counts(dense.max() + 1, num_replicates, config.seed)[:, dense]
            for layer in res.layers(enc, m):
                t0 = time.perf_counter()
                reps = np.array([stat(layer, c) for c in counts])
                lo, hi = bootstrap.percentile_ci(reps, 0.95)
                r = res.get(enc, layer, m)
                print(f"| `{m}` | {enc} | {layer} | {fmt_ci(r)} | [{lo:.3f}, {hi:.3f}] | "
                      f"{reps.mean() - r.value:+.3f} | {time.perf_counter() - t0:.0f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--cost", action="store_true",
                    help="also each measure's CPU and wall seconds, recomputed from the cache")
    ap.add_argument("--recompute", type=int, default=0, metavar="B",
                    help="also B recomputed bootstrap replicates per layer (rankme, alpha_req, lidar)")
    args = ap.parse_args(argv)
    res = results.read_results(args.run_dir)
    table(res)
    if args.cost:
        cost(Path(args.run_dir), res)
    if args.recompute:
        recompute(Path(args.run_dir), res, args.recompute)


if __name__ == "__main__":
    main()
