"""SSL objectives by name: each declares its row of Table 1 (Liu, Yeh & Glass, ICASSP 2024) and
builds its task.

An objective is an :class:`Objective`: its family (APC or MLM), the four columns of the table
(views, Z_target, p_psi, H(Z_target)), whether it trains the causal backbone, and ``build``,
which makes the task (:mod:`speechmi_jax.ssl.models`) from a pretraining config, the backbone
and a :class:`Context`. ``speechmi pretrain`` (``config.objective``), the CLI's help, the
selection analysis's families and the README's table read this registry, so a new objective is
one :func:`register` call in its own module plus its config file:

    from speechmi_jax.ssl import registry

    registry.register(registry.Objective(
        name="my_objective", family="MLM", views="...", z_target="...", p_psi="...",
        h_target="...", build=lambda config, backbone, ctx: MyTask(backbone)))

(a config file that imports that module can then set ``c.objective = "my_objective"``). The
built-in rows are registered by :mod:`speechmi_jax.ssl.table1`, which is what callers import to
look objectives up (``table1.objective(name)``, ``table1.names()``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional


@dataclasses.dataclass(frozen=True)
class Context:
    """What a task may need besides its config and backbone: the corpus and the loaded splits
    (cluster targets are fitted on them), the run folder, and given centroids."""

    corpus: Any = None
    sets: Optional[dict] = None
    out_dir: Optional[Path] = None
    centroids: Any = None


@dataclasses.dataclass(frozen=True)
class Objective:
    """One SSL objective: its Table 1 row and its task factory."""

    name: str
    family: str  # "APC" (autoregressive) or "MLM" (masked prediction)
    views: str
    z_target: str
    p_psi: str
    h_target: str
    build: Callable  # (config, backbone, Context) -> task
    causal: bool = False  # trains the causal backbone (APC's context network)
    learned_target: bool = False  # Z_target moves with training (collapse is watched)

    def __post_init__(self):
        if self.family not in ("APC", "MLM"):
            raise ValueError(f"objective {self.name!r}: family {self.family!r}; expected 'APC' or 'MLM'")


REGISTRY: dict[str, Objective] = {}


def register(objective: Objective) -> Objective:
    """Adds ``objective`` (a name may be registered once)."""
    if objective.name in REGISTRY and REGISTRY[objective.name] != objective:
        raise ValueError(f"objective {objective.name!r} is registered already")
    REGISTRY[objective.name] = objective
    return objective


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Objective:
    if name not in REGISTRY:
        raise ValueError(f"objective {name!r}: expected one of {names()}")
    return REGISTRY[name]
