"""Reading a config file: ``get_config(arg)`` of a Python file, ``--set key=value`` overrides,
then the schema's check (the run schema, ``configs/base.py``, unless the caller passes another).
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

from speechmi_jax.configs.base import (ESTIMATOR_SECTIONS, ConfigError, estimator_settings,
                                       validate)


def load_config(path: str | Path, overrides: list[str] = (), arg: str = "", schema=validate):
    """Imports ``get_config(arg)`` from a Python config file and applies ``key=value`` overrides.

    ``arg`` is the big_vision-style config argument (``"smoke"`` selects the config's small
    settings).
    Values are parsed as Python literals when possible (``probe.steps=200``,
    ``encoders="['logmel']"``), else kept as strings; ``probe.*``, ``infonce.*`` and ``ctc.*``
    also take any other argument of their estimator (``infonce.eval_every=50``). Unknown keys, values of the wrong type
    and any other break of the config schema (``configs/base.py``) raise :class:`ConfigError`
    before any work is done. ``schema`` checks the result and returns it: the run schema by
    default; pretraining configs (``ssl/trainer.py``) pass their own.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    spec = importlib.util.spec_from_file_location(f"speechmi_config_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken config file: say which
        raise ConfigError(f"{path}: failed to import: {type(e).__name__}: {e}") from e
    if not hasattr(module, "get_config"):
        raise ConfigError(f"{path}: defines no get_config()")
    try:
        config = module.get_config(arg)
    except ValueError as e:
        raise ConfigError(f"{path}: get_config({arg!r}): {e}") from e
    apply_overrides(config, overrides, source=str(path))
    try:
        return schema(config)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None


def apply_overrides(config, overrides, source="config"):
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"override {item!r}: expected key=value")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        *parents, leaf = key.split(".")
        node = config
        for p in parents:
            if p not in node:
                raise ConfigError(f"override {item!r}: {source} has no key {key!r}")
            node = node[p]
        # an estimator argument the config leaves at its default may be set too
        settable = (len(parents) == 1 and parents[0] in ESTIMATOR_SECTIONS
                    and leaf in estimator_settings(parents[0]))
        if leaf not in node and not settable:
            raise ConfigError(f"override {item!r}: {source} has no key {key!r}")
        try:
            node[leaf] = value
        except TypeError as e:
            raise ConfigError(f"override {item!r}: wrong type for {key!r} "
                              f"(now {node[leaf]!r}): {e}") from None
    return config
