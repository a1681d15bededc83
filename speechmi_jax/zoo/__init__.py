"""The model zoo: small self-supervised encoders this repository trains and ships.

Each model lives in ``speechmi_jax/zoo/<name>/``:

* ``step<N>/config.json`` + ``step<N>/model.safetensors`` (float16): the encoder exported at
  training step N (every checkpoint of the run; the largest N is the final model; ``step0`` is
  the run's initialisation, the model's own random-init control);
* ``card.json`` / ``card.md``: the model card (data, command, steps, wall time, machine, final
  dev bound and H(Z_target), parameters, the checkpoints shipped, the recorded dev metric);
* ``objective.safetensors``: the final model's training parameters besides the encoder (heads,
  VQ, mask embedding; data2vec's EMA teacher) and HuBERT's k-means centroids, from which, with
  the final checkpoint's encoder, :func:`speechmi_jax.zoo.metric.recompute_dev_metric`
  reproduces the dev metric recorded in the card.

Names: ``"<name>"`` is the final model, ``"<name>@step<N>"`` a checkpoint along training
(``smi.load_encoder("melhubert-4x256@step0")``). ``random:<arch>@<seed>`` keeps its meaning: zoo
names never start with ``random:``. Each model is a recipe file (``speechmi_jax/configs/zoo/``),
trained by ``experiments/train_zoo.sh`` and shipped by ``python -m speechmi_jax.zoo.ship``
(README, "Model zoo").

More zoo folders, laid out the same way (the selection zoo's cache, built by
``experiments/build_selection_zoo.py``), join the package's with ``SPEECHMI_ZOO_PATH``
(folders separated by ``os.pathsep``), searched before it: a name found in several is taken
from the first (the selection zoo holds the shipped models again, with every checkpoint).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

ZOO_DIR = Path(__file__).parent
PATH_ENV = "SPEECHMI_ZOO_PATH"
_STEP = re.compile(r"step(\d+)")


def roots() -> list[Path]:
    """The zoo folders searched for a name: those of ``$SPEECHMI_ZOO_PATH``, then the package's."""
    extra = [Path(p).expanduser() for p in os.environ.get(PATH_ENV, "").split(os.pathsep) if p]
    return extra + [ZOO_DIR]


def names() -> list[str]:
    """The zoo's models (folders holding a ``card.json``, in any of :func:`roots`), sorted."""
    return sorted({p.parent.name for root in roots() for p in root.glob("*/card.json")})


def folder(name: str) -> Path:
    """The folder of model ``name`` (in the first of :func:`roots` that holds it)."""
    for root in roots():
        if (root / name / "card.json").is_file():
            return root / name
    raise KeyError(f"{name!r} is not a zoo model; the zoo holds {names()}")


def step_dirs(model_dir: Path) -> list[Path]:
    """The ``step<N>`` checkpoint folders of a model folder."""
    return [p for p in Path(model_dir).iterdir() if p.is_dir() and _STEP.fullmatch(p.name)]


def steps(name: str) -> list[int]:
    """The training steps of ``name``'s shipped checkpoints, ascending (the last is the final model)."""
    return sorted(int(p.name[4:]) for p in step_dirs(folder(name)))


def entries() -> list[str]:
    """Every loadable zoo name: each model, then each of its checkpoints as ``<name>@step<N>``."""
    out = []
    for n in names():
        out += [n] + [f"{n}@step{s}" for s in steps(n)]
    return out


def is_zoo_name(spec: str) -> bool:
    """True when ``spec`` names a zoo model (``<name>`` or ``<name>@...``); it may still be a bad step."""
    return spec.partition("@")[0] in names()


def resolve(spec: str) -> Path:
    """``"<name>"`` -> the final model's folder; ``"<name>@step<N>"`` -> that checkpoint's folder."""
    name, at, step = spec.partition("@")
    available = steps(name)
    if not at:
        return folder(name) / f"step{available[-1]}"
    m = _STEP.fullmatch(step)
    if not m or int(m.group(1)) not in available:
        raise ValueError(f"{spec!r}: unknown checkpoint {step!r}; expected {name}@step<N> with N one "
                         f"of {available}")
    return folder(name) / step


def parse(spec: str) -> tuple[str, int]:
    """``"<name>"`` -> (name, final step); ``"<name>@step<N>"`` -> (name, N)."""
    return spec.partition("@")[0], int(resolve(spec).name[4:])


def is_causal(spec: str) -> bool:
    """True when the checkpoint's model is causal (its frame t sees no later frame: APC)."""
    return bool(json.loads((resolve(spec) / "config.json").read_text()).get("causal", False))


def weights_digest(spec: str) -> str:
    """SHA-256 of the checkpoint's weights file: equal for checkpoints with equal weights
    (two runs with one seed and one architecture share their ``step0``)."""
    import hashlib

    return hashlib.sha256((resolve(spec) / "model.safetensors").read_bytes()).hexdigest()


def distinct(specs) -> list[str]:
    """``specs`` (zoo names) with each weights file once: the first name stands for the
    checkpoints that share it (runs with one seed and architecture share their ``step0``)."""
    seen, out = set(), []
    for spec in specs:
        if (d := weights_digest(spec)) not in seen:
            seen.add(d)
            out.append(spec)
    return out


def card(name: str) -> dict:
    """The model card of ``name`` (``card.json``)."""
    return json.loads((folder(name) / "card.json").read_text())


def table() -> str:
    """A markdown table of the zoo from the cards (README, "Model zoo")."""
    rows = ["| model | objective | params | checkpoints | wall time (s) | final dev bound (bits) | "
            "H(Z_target) (bits) | dev loss |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for n in names():
        c = card(n)
        f = c["final_dev"]
        rows.append(f"| `{n}` | {c['objective']} | {c['parameters']:,} | {', '.join(map(str, c['checkpoints']))} "
                    f"| {c['wall_time_s']:.0f} | {f['bound_bits']:.3f} | {f['h_target_bits']:.3f} "
                    f"| {f['loss']:.4f} |")
    return "\n".join(rows)
