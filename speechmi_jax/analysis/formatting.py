"""How the report writes numbers: one place for the digits of each unit and for a correlation
with its CI and permutation p (``report.md`` and its SSL model-selection section)."""

from __future__ import annotations

from typing import Optional

from speechmi_jax.analysis.correlation import Correlation

DIGITS = {"bits": 3, "fraction": 3, "percent": 1, "dims": 1, "exponent": 3, "correlation": 3}


def fmt(value: float, unit: str) -> str:
    return f"{value:.{DIGITS[unit]}f}"


def fmt_ci(rec) -> str:
    """A record's value with its CI in its unit's digits."""
    return f"{fmt(rec.value, rec.unit)} [{fmt(rec.ci[0], rec.unit)}, {fmt(rec.ci[1], rec.unit)}]"


def fmt_p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.3f}"


def fmt_corr(c: Optional[Correlation]) -> str:
    if c is None:
        return "–"
    if c.r != c.r:   # NaN: a constant measure
        return "undefined (constant)"
    ci = "[CI n/a]" if c.ci[0] != c.ci[0] else f"[{c.ci[0]:+.2f}, {c.ci[1]:+.2f}]"
    return f"{c.r:+.2f} {ci}, {fmt_p(c.p_value)}"
