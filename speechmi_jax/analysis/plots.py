"""PNG figures of a results table (matplotlib, Agg backend: no display needed).

* :func:`plot_layer_curves`: one panel per measure, one line per encoder over layers with its
  CI band; a single-layer encoder (log-mel, MFCC) is a dashed horizontal line with its band.
* :func:`plot_scatter`: a label-free measure (x) against each supervised one (y), one point per
  (encoder, layer) with CI error bars, layers of one encoder joined in layer order.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Optional, Sequence

from speechmi_jax.analysis.results import MEASURES, Results, direction


@functools.cache
def _pyplot():
    """matplotlib.pyplot on the Agg backend, imported at the first figure: it costs ~0.6 s, which
    every ``speechmi`` process would pay at start (pretraining and runs draw none until the end)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _label(measure: str) -> str:
    return f"{measure} ({MEASURES[measure].unit}; {direction(measure)})"


def _colors(encoders):
    cmap = _pyplot().get_cmap("tab10")
    return {enc: cmap(i % 10) for i, enc in enumerate(encoders)}


def _grid(num_panels: int, panel_size: tuple[float, float]):
    """Up to 3 panels a row -> (figure, axes [rows, cols])."""
    ncols = min(3, num_panels)
    nrows = math.ceil(num_panels / ncols)
    return _pyplot().subplots(nrows, ncols, squeeze=False, dpi=110,
                              figsize=(panel_size[0] * ncols, panel_size[1] * nrows))


def plot_layer_curves(res: Results, path: str | Path,
                      measures: Optional[Sequence[str]] = None) -> Path:
    """Layer-wise curves with CI bands, one panel per measure -> the PNG's path."""
    measures = list(measures or res.measures())
    if not measures:
        raise ValueError("plot_layer_curves: the results hold no records")
    encoders = res.encoders()
    colors = _colors(encoders)
    fig, axes = _grid(len(measures), (5.2, 3.8))
    max_layer = max((max(res.layers(e)) for e in encoders if res.layers(e)), default=0)
    for ax, measure in zip(axes.flat, measures):
        for enc in encoders:
            series = res.series(enc, measure)
            if not series:
                continue
            x = [r.layer for r in series]
            y = [r.value for r in series]
            lo = [r.ci[0] for r in series]
            hi = [r.ci[1] for r in series]
            c = colors[enc]
            if len(series) == 1:
                span = [0, max(max_layer, 1)]
                ax.plot(span, [y[0]] * 2, ls="--", color=c, lw=1.5, label=f"{enc} (1 layer)")
                ax.fill_between(span, [lo[0]] * 2, [hi[0]] * 2, color=c, alpha=0.12, lw=0)
            else:
                ax.plot(x, y, marker="o", ms=3.5, color=c, lw=1.8, label=enc)
                ax.fill_between(x, lo, hi, color=c, alpha=0.2, lw=0)
        ax.set_title(_label(measure), fontsize=10)
        ax.set_xlabel("layer (0 = encoder input)")
        ax.grid(alpha=0.3)
        ax.xaxis.get_major_locator().set_params(integer=True)
    title = f"Per-layer measures with {100 * res.ci_level:.0f}% CIs"
    return _finish(fig, axes, len(measures), title, path)


def plot_scatter(res: Results, x_measure: str, y_measures: Sequence[str], path: str | Path,
                 titles: Optional[dict] = None) -> Path:
    """``x_measure`` vs each of ``y_measures``, points with CI error bars -> the PNG's path.

    ``titles`` maps a y measure to a panel subtitle (e.g. its pooled Spearman and CI).
    """
    y_measures = list(y_measures)
    if not y_measures:
        raise ValueError("plot_scatter: no y measures")
    encoders = res.encoders()
    colors = _colors(encoders)
    fig, axes = _grid(len(y_measures), (4.8, 4.2))
    for ax, ym in zip(axes.flat, y_measures):
        for enc in encoders:
            pts = [(r, res.get(enc, r.layer, ym)) for r in res.series(enc, x_measure)]
            pts = [(a, b) for a, b in pts if b is not None]
            if not pts:
                continue
            xs = [a.value for a, _ in pts]
            ys = [b.value for _, b in pts]
            # A percentile interval need not contain its point estimate (skewed or degenerate
            # bootstrap distributions): error bars are clipped at zero length.
            xerr = [[max(0.0, a.value - a.ci[0]) for a, _ in pts], [max(0.0, a.ci[1] - a.value) for a, _ in pts]]
            yerr = [[max(0.0, b.value - b.ci[0]) for _, b in pts], [max(0.0, b.ci[1] - b.value) for _, b in pts]]
            c = colors[enc]
            ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="o", ms=4, color=c, ecolor=c,
                        elinewidth=0.8, capsize=2, alpha=0.9, label=enc)
            if len(pts) > 1:
                ax.plot(xs, ys, color=c, lw=0.7, alpha=0.5)
            for (a, _), x, y in zip(pts, xs, ys):
                ax.annotate(str(a.layer), (x, y), textcoords="offset points", xytext=(3, 3),
                            fontsize=7, color=c)
        ax.set_xlabel(_label(x_measure), fontsize=9)
        ax.set_ylabel(_label(ym), fontsize=9)
        ax.grid(alpha=0.3)
        if titles and ym in titles:
            ax.set_title(titles[ym], fontsize=9)
    title = f"{x_measure} (label-free) vs supervised measures; numbers = layer"
    return _finish(fig, axes, len(y_measures), title, path)


def _finish(fig, axes, num_panels: int, title: str, path) -> Path:
    """Hides unused panels, puts one legend (all encoders) below, saves and closes."""
    used = list(axes.flat)[:num_panels]
    for ax in list(axes.flat)[num_panels:]:
        ax.set_visible(False)
    handles, labels = [], []
    for ax in used:
        for h, l in zip(*ax.get_legend_handles_labels()):
            if l not in labels:
                handles.append(h)
                labels.append(l)
    ncol = min(4, max(len(labels), 1))
    fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=11)
    rows = math.ceil(len(labels) / ncol)
    height = fig.get_size_inches()[1]
    fig.tight_layout(rect=(0, min(0.3, (0.1 + 0.22 * rows) / height), 1, 1 - 0.35 / height))
    path = Path(path)
    fig.savefig(path)
    _pyplot().close(fig)
    return path
