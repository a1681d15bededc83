"""Learning curves of the zoo's families in one figure: best-layer phone MI and linear-CTC PER at
each checkpoint along training, against training steps and against training wall seconds, with
the baselines (log-mel, log-mel +-4 stacked) as lines; plus the objective's dev bound from the
runs' TensorBoard event files.

    speechmi run experiments/configs/zoo_quality_bundled.py --out runs/zoo_curves --set \
        "encoders=['melapc-4x256@step0','runs/zoo/melapc-4x256/models/step100', ..., 'logmel','logmel-stack4']"
    python experiments/zoo_curves.py runs/zoo_curves/results.json --runs runs/zoo --out zoo_curves.png

A checkpoint is named ``<model>@step<N>`` (the zoo) or ``.../<model>/models/step<N>`` (a run
folder); the seconds of step N are the wall time of the run's dev record at N (its event
file), so they are the run's own, on its machine. Prints the table the figure shows.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from speechmi_jax.analysis.results import read_results
from speechmi_jax.ssl.events import read_scalars

_RUN = re.compile(r"(?:.*/)?([^/]+)/(?:member-\d+/)?models/step(\d+)/?$")
_ZOO = re.compile(r"([^@/]+)@step(\d+)$")


def checkpoint_of(encoder: str):
    """(model, step) of a checkpoint's encoder name, or None for anything else."""
    for pattern in (_RUN, _ZOO):
        m = pattern.fullmatch(encoder)
        if m:
            return m.group(1), int(m.group(2))
    return None


def best(results, encoder: str, measure: str, higher: bool):
    recs = results.series(encoder, measure)
    return (max if higher else min)(recs, key=lambda r: r.value) if recs else None


def curves(results, runs: Path):
    """{model: [(step, seconds, phone MI record, PER record), ...]} sorted by step."""
    out: dict = {}
    for enc in results.encoders():
        ck = checkpoint_of(enc)
        if ck is None:
            continue
        model, step = ck
        out.setdefault(model, []).append((step, enc))
    table = {}
    for model, points in out.items():
        member = runs / model
        member = member / "member-0" if (member / "member-0").is_dir() else member
        wall = {s: w for s, _, w in read_scalars(member).get("dev/loss", [])}
        t0 = wall.get(0)
        rows = []
        for step, enc in sorted(points):
            seconds = wall[step] - t0 if step in wall and t0 is not None else float("nan")
            rows.append((step, seconds, best(results, enc, "phone_mi", True), best(results, enc, "ctc_per", False)))
        table[model] = rows
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--runs", type=Path, required=True, help="the zoo's run folders (train_zoo.sh's RUNS)")
    ap.add_argument("--out", type=Path, default=Path("zoo_curves.png"))
    a = ap.parse_args(argv)
    results = read_results(a.results)
    table = curves(results, a.runs)
    fmt = lambda r: "-" if r is None else f"{r.value:.2f} [{r.ci[0]:.2f}, {r.ci[1]:.2f}] (layer {r.layer})"
    print("| model | step | wall s | phone MI, bits (best layer) | PER, % (best layer) |")
    print("| --- | --- | --- | --- | --- |")
    for model, rows in table.items():
        for step, sec, mi, per in rows:
            print(f"| `{model}` | {step} | {sec:.0f} | {fmt(mi)} | {fmt(per)} |")
    baselines = [e for e in results.encoders() if checkpoint_of(e) is None]
    for e in baselines:
        print(f"| `{e}` | - | - | {fmt(best(results, e, 'phone_mi', True))} | {fmt(best(results, e, 'ctc_per', False))} |")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    for row, (measure, label, idx) in enumerate((("phone_mi", "phone MI, best layer (bits)", 2),
                                                 ("ctc_per", "linear-CTC PER, best layer (%)", 3))):
        for col, (xi, xlabel) in enumerate(((0, "training step"), (1, "training wall seconds"))):
            ax = axes[row, col]
            for model, rows in table.items():
                pts = [(r[xi], r[idx]) for r in rows if r[idx] is not None]
                x = [max(p[0], 1) if xi == 0 else p[0] for p in pts]
                ax.plot(x, [p[1].value for p in pts], marker="o", label=model)
                ax.fill_between(x, [p[1].ci[0] for p in pts], [p[1].ci[1] for p in pts], alpha=0.2)
            for e in baselines:
                r = best(results, e, measure, measure == "phone_mi")
                if r is not None:
                    ax.axhline(r.value, ls="--", lw=1, color="gray")
                    ax.text(ax.get_xlim()[0], r.value, f" {e}", va="bottom", fontsize=8, color="gray")
            if xi == 0:
                ax.set_xscale("log")
            ax.set_xlabel(xlabel + (" (step 0 drawn at 1)" if xi == 0 else ""))
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
        axes[row, 0].legend(fontsize=8)
    for ax, tag, label in ((axes[0, 2], "dev/bound_bits", "objective's dev bound (bits)"),
                           (axes[1, 2], "dev/loss", "objective's dev loss")):
        for model in table:
            member = a.runs / model
            member = member / "member-0" if (member / "member-0").is_dir() else member
            pts = read_scalars(member).get(tag, [])
            ax.plot([max(s, 1) for s, _, _ in pts], [v for _, v, _ in pts], label=model)
        ax.set_xscale("log")
        ax.set_xlabel("training step (event files)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0, 2].legend(fontsize=8)
    axes[1, 2].set_yscale("log")
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(f"\nfigure: {a.out}")


if __name__ == "__main__":
    main()
