"""Allowed ranges of config values, declared as tables and checked by one walk.

Each schema keeps a table ``{dotted key: Range}`` next to its defaults (``configs/base.py``,
``configs/pretrain/common.py``); :func:`check` walks every leaf of a config (nested sections,
e.g. ``optim.warmup_steps`` or ``model.hf_config.hidden_size``) and checks the leaves the table
names. A list value (``population.lr``, ``probe.l2``) must be non-empty (unless its range says
``empty_ok``) and each of its items in range. None passes (the schemas say where None is allowed). A failure is a
:class:`~speechmi_jax.configs.base.ConfigError` naming the key (``probe.l2[1]``), the value and
the allowed range.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Iterator, Mapping, Optional


@dataclasses.dataclass(frozen=True)
class Range:
    """lo / hi: bounds (None = unbounded); lo_open / hi_open: exclude them; integer: whole
    numbers only; unit: said after the range (``seconds``, ``frames``)."""

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    integer: bool = False
    unit: str = ""
    empty_ok: bool = False  # a list key that may be empty (e.g. no extra export steps)

    def __contains__(self, value) -> bool:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return False
        if self.integer and not isinstance(value, numbers.Integral):
            return False
        if not math.isfinite(value):
            return False
        if self.lo is not None and (value < self.lo or (self.lo_open and value == self.lo)):
            return False
        if self.hi is not None and (value > self.hi or (self.hi_open and value == self.hi)):
            return False
        return True

    def describe(self) -> str:
        """``an integer >= 1``, ``> 0 (seconds)``, ``in (0, 1)``."""
        kind = "an integer " if self.integer else ""
        if self.lo is not None and self.hi is not None:
            text = (f"{kind}in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                    f"{')' if self.hi_open else ']'}")
        elif self.lo is not None:
            text = f"{kind}{'>' if self.lo_open else '>='} {self.lo:g}"
        elif self.hi is not None:
            text = f"{kind}{'<' if self.hi_open else '<='} {self.hi:g}"
        else:
            text = "an integer" if self.integer else "a finite number"
        return text + (f" ({self.unit})" if self.unit else "")

    def outside(self):
        """A value just outside the range (tests walk every key with one)."""
        if self.lo is not None:
            return self.lo if self.lo_open else (self.lo - 1 if self.integer else self.lo - 0.5)
        if self.hi is not None:
            return self.hi if self.hi_open else (self.hi + 1 if self.integer else self.hi + 0.5)
        return float("nan")


def count(lo: int = 1, unit: str = "") -> Range:
    """An integer >= lo."""
    return Range(lo=lo, integer=True, unit=unit)


def positive(unit: str = "") -> Range:
    """A number > 0."""
    return Range(lo=0, lo_open=True, unit=unit)


def at_least(lo: float, unit: str = "") -> Range:
    """A number >= lo."""
    return Range(lo=lo, unit=unit)


def between(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False,
            unit: str = "") -> Range:
    """A number in [lo, hi] (either end open)."""
    return Range(lo=lo, hi=hi, lo_open=lo_open, hi_open=hi_open, unit=unit)


FRACTION = between(0, 1, lo_open=True, hi_open=True)  # in (0, 1)
SEED = count(0)


def leaves(config, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Every (dotted key, value) of a nested config; a mapping is walked, anything else is a
    leaf (lists and tuples included)."""
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or hasattr(value, "items"):
            yield from leaves(value, name + ".")
        else:
            yield name, value


def is_numeric(value) -> bool:
    """A number (not a bool), or a non-empty list / tuple of numbers: the leaves a range table
    must cover."""
    if isinstance(value, (list, tuple)):
        return bool(value) and all(is_numeric(v) for v in value)
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check(config, table: Mapping[str, Range], error=ValueError) -> None:
    """Raises ``error`` for the first leaf of ``config`` outside its range in ``table``."""
    for key, value in leaves(config):
        rng = table.get(key)
        if rng is None or value is None:
            continue
        if isinstance(value, (list, tuple)):
            if not value:
                if rng.empty_ok:
                    continue
                raise error(f"config key {key!r}: an empty list; expected one or more values, "
                            f"each {rng.describe()}")
            items = [(f"{key}[{i}]", v) for i, v in enumerate(value)]
        else:
            items = [(key, value)]
        for name, v in items:
            if v not in rng:
                raise error(f"config key {name!r}: {v!r} is out of range; expected "
                            f"{rng.describe()}")
