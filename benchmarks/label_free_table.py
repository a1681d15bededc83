"""The label-free measures of a run, side by side: per measure, encoder and layer, the bound in
bits and its fraction of the ceiling (log2 K or H(codes)); more than 90 % is saturated.

    speechmi demo --out RUN --set max_utterances_per_split=200 --set "measures=[...]" ...
    python benchmarks/label_free_table.py RUN [--timings]

Prints a markdown table (one row per measure x encoder) and each measure's wall seconds per
encoder (``metadata.timings_s``); ``--timings`` adds a table of those seconds per encoder with
the clean feature pass (``features_s``) and the masked one (``masked_features_s``, a run with
``codes_masked``) beside them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from speechmi_jax.analysis import results  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("--timings", action="store_true",
                    help="also a table of wall seconds per encoder: feature pass and each measure")
    args = ap.parse_args(argv)
    res = results.read_results(args.run_dir)
    # the bounds (records with a ceiling); the rank-based statistics: benchmarks/rank_table.py
    label_free = [m for m in res.measures() if results.MEASURES[m].kind == "label_free"
                  and all("ceiling" in r.extra for r in res.records if r.measure == m)]
    layers = max(len(res.layers(e)) for e in res.encoders())
    print("| measure | encoder | ceiling (bits) | " + " | ".join(f"layer {l}" for l in range(layers))
          + " | max fraction | seconds |")
    print("|---|---|---|" + "---|" * layers + "---|---|")
    timings = res.metadata.get("timings_s", {})
    for m in label_free:
        for enc in res.encoders():
            recs = res.series(enc, m)
            if not recs:
                continue
            fracs = [results.ceiling_fraction(r) for r in recs]
            cells = [f"{r.value:.2f} ({100 * f:.0f} %)" + (" ⚠" if f > results.SATURATION else "")
                     for r, f in zip(recs, fracs)]
            cells += [""] * (layers - len(cells))
            secs = timings.get(enc, {}).get(f"{m}_s")
            print(f"| `{m}` | {enc} | {recs[0].extra['ceiling']:.2f} | " + " | ".join(cells)
                  + f" | {100 * max(fracs):.0f} % | {'' if secs is None else f'{secs:.0f}'} |")
    if args.timings:
        print("\n| encoder | features (s) | masked pass (s) | "
              + " | ".join(f"`{m}` (s)" for m in label_free) + " |")
        print("|---|---|---|" + "---|" * len(label_free))
        for enc in res.encoders():
            t = timings.get(enc, {})
            cells = [t.get(k) for k in ["features_s", "masked_features_s"]
                     + [f"{m}_s" for m in label_free]]
            print(f"| {enc} | " + " | ".join("" if c is None else f"{c:.0f}" for c in cells) + " |")


if __name__ == "__main__":
    main()
