"""The config argument: every config file's ``get_config(arg)`` (big_vision style) takes ``""``
for its full settings or ``"smoke"`` for its small ones, which the CLI's ``--smoke`` selects."""

from __future__ import annotations

SMOKE = "smoke"


def from_flag(smoke: bool) -> str:
    """The argument ``--smoke`` stands for."""
    return SMOKE if smoke else ""


def is_smoke(arg: str, config_name: str) -> bool:
    """True for ``"smoke"``, False for ``""``; any other argument is a ValueError naming the
    config."""
    if arg not in ("", SMOKE):
        raise ValueError(f"{config_name}: unknown config argument {arg!r}; expected '' or "
                         f"'{SMOKE}'")
    return arg == SMOKE
