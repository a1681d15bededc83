"""``load_encoder``: one entry point from a name or a path to an :class:`Encoder`.

Accepted forms:

* ``"logmel"``, ``"mfcc"`` - classic single-layer feature baselines; ``"logmel-stack4"`` -
  log-mel with the 4 frames on either side stacked (context alone, no learning);
  ``"logmel-past8"`` - with the 8 frames before stacked (the context a causal model can see).
* ``"whisper-tiny.en"``, ``"whisper-base"`` - real Whisper weights shipped by installed
  packages (the ``demo`` extra); a clear error says what to install when absent.
* ``"random:<arch>"`` (e.g. ``random:hubert-base``, ``random:whisper-tiny``) - the
  random-init control of an architecture; ``random:<arch>@<seed>`` picks the seed.
* ``"melapc-4x256"``, ``"melhubert-4x256@step0"`` ... - the model zoo (``speechmi_jax/zoo/``): small
  self-supervised encoders this package trains and ships, final or at a checkpoint along
  training (``<name>@step<N>``); :func:`available_encoders` lists them.
* a local directory in Hugging Face format (``config.json`` + ``model.safetensors``) or a
  CTranslate2 Whisper directory (``model.bin``); a ``speechmi pretrain`` run folder stands for
  its exported ``model/`` (:func:`model_folder`).
* a hub id (``facebook/hubert-base-ls960``), resolved through the local Hugging Face cache
  only: nothing is downloaded unless the user allows it (see ``checkpoint.resolve``).

Every form but the zoo's names goes through one table, :data:`FAMILIES`: each encoder family
(:class:`Family`) claims its built-in names, its ``random:`` architectures and the
``config.json`` ``model_type`` values of the folders it reads, with a loader for each;
:func:`register_family` adds one, from this module or from any module a config imports
(``tests/toy_plugins.py`` registers a toy family that way). An unknown model type is refused
naming the registered ones.

``window_seconds`` sets a Whisper encoder's analysis window (``encoders/whisper.py``),
decided by what was loaded, never by the name; encoders without a fixed window (the
wav2vec 2.0 family, the baselines) have nothing to set and ignore it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Callable, Optional

import jax.numpy as jnp

from speechmi_jax.encoders.base import Encoder
from speechmi_jax import zoo
from speechmi_jax.encoders import baselines, checkpoint, logmel_transformer, wav2vec2, whisper

log = logging.getLogger("speechmi_jax.encoders")
RANDOM_PREFIX = "random:"
# A CTranslate2 directory (model.bin, a config.json without model_type) reads as this type.
CT2_MODEL_TYPE = "ctranslate2"


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """What :func:`load_encoder` was asked for, handed to every family's loader (a family uses
    what applies to it: ``window_seconds`` is Whisper's alone)."""

    dtype: Any = jnp.float32
    allow_pickle: bool = False
    window_seconds: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class Family:
    """An encoder family: the names and checkpoints it loads, and how.

    model_types: the ``config.json`` ``model_type`` values of the model folders that
      ``load(path, options)`` reads (a folder, a ``speechmi pretrain`` run, a zoo name or a
      hub id all end as a folder). builtins: names ``load_builtin(name, options)`` loads
      without a folder. random_archs: the architectures of ``random:<arch>[@<seed>]``, built by
      ``load_random(arch, seed, options)``. Each loader returns an :class:`Encoder`.
    """

    name: str
    model_types: tuple[str, ...] = ()
    load: Optional[Callable[[Path, LoadOptions], Encoder]] = None
    builtins: tuple[str, ...] = ()
    load_builtin: Optional[Callable[[str, LoadOptions], Encoder]] = None
    random_archs: tuple[str, ...] = ()
    load_random: Optional[Callable[[str, int, LoadOptions], Encoder]] = None


FAMILIES: dict[str, Family] = {}
# what a family claims -> the loader that serves it
CLAIMS = {"model_types": "load", "builtins": "load_builtin", "random_archs": "load_random"}


def register_family(family: Family) -> Family:
    """Adds ``family`` to :data:`FAMILIES`: :func:`load_encoder` then loads its model types,
    built-in names and random architectures. A name, model type, built-in or architecture that
    another family already claims, or a claim without its loader, is refused."""
    if family.name in FAMILIES:
        raise ValueError(f"encoder family {family.name!r} is registered twice")
    for claim, loader in CLAIMS.items():
        keys = getattr(family, claim)
        if keys and getattr(family, loader) is None:
            raise ValueError(f"encoder family {family.name!r} lists {claim} {list(keys)} "
                             f"without {loader}")
        taken = {k: f.name for k in keys for f in FAMILIES.values() if k in getattr(f, claim)}
        if taken:
            raise ValueError(f"encoder family {family.name!r}: {claim} already registered "
                             f"by another family: {taken}")
    FAMILIES[family.name] = family
    return family


def claimed(claim: str) -> list[str]:
    """Every registered family's ``claim`` (a key of :data:`CLAIMS`), in registration order."""
    return [k for f in FAMILIES.values() for k in getattr(f, claim)]


def claimant(claim: str, key: str) -> Optional[Family]:
    """The family whose ``claim`` holds ``key``, or None."""
    return next((f for f in FAMILIES.values() if key in getattr(f, claim)), None)


register_family(Family(
    "baselines", builtins=tuple(baselines.BASELINE_DIMS),
    load_builtin=lambda name, o: baselines.load_baseline(name)))
register_family(Family(
    "wav2vec2", model_types=tuple(wav2vec2.PREFIXES),
    load=lambda path, o: wav2vec2.load_wav2vec2_family(path, dtype=o.dtype,
                                                       allow_pickle=o.allow_pickle),
    random_archs=tuple(sorted(wav2vec2.RANDOM_ARCHS)),
    load_random=lambda arch, seed, o: wav2vec2.random_wav2vec2_family(arch, seed=seed,
                                                                      dtype=o.dtype)))
register_family(Family(
    "whisper", model_types=("whisper",),
    load=lambda path, o: whisper.load_whisper_hf(path, dtype=o.dtype, allow_pickle=o.allow_pickle,
                                                 window_seconds=o.window_seconds),
    builtins=tuple(whisper.BUILTINS),
    load_builtin=lambda name, o: whisper.load_whisper_builtin(name, dtype=o.dtype,
                                                              window_seconds=o.window_seconds),
    random_archs=tuple(sorted(whisper.ARCHS)),
    load_random=lambda arch, seed, o: whisper.random_whisper(arch, seed=seed, dtype=o.dtype,
                                                             window_seconds=o.window_seconds)))
register_family(Family(
    "whisper-ctranslate2", model_types=(CT2_MODEL_TYPE,),
    load=lambda path, o: whisper.load_whisper_ct2(path, dtype=o.dtype,
                                                  window_seconds=o.window_seconds)))
register_family(Family(  # the pretraining zoo's backbone (ssl/)
    "logmel-transformer", model_types=logmel_transformer.MODEL_TYPES,
    load=lambda path, o: logmel_transformer.load(path, dtype=o.dtype)))


def load_encoder(name_or_path: str | os.PathLike, *, dtype=jnp.float32,
                 allow_pickle: bool = False, window_seconds: Optional[float] = None) -> Encoder:
    """Loads an encoder by name, local path or hub id (see the module docstring).

    Args:
      name_or_path: what to load.
      dtype: compute dtype of the forward pass (float32 default; bfloat16 for accelerators).
        Hidden states are returned in this dtype; parameters stay float32.
      allow_pickle: allow ``pytorch_model.bin`` (pickle executes code; loaded with
        ``torch.load(weights_only=True)``) when no ``model.safetensors`` exists.
      window_seconds: a Whisper encoder's analysis window (None: the model's native 30 s);
        ignored by encoders without one.
    """
    name, options = os.fspath(name_or_path), LoadOptions(dtype, allow_pickle, window_seconds)
    family = claimant("builtins", name)
    if family is not None:
        return family.load_builtin(name, options)
    if name.startswith(RANDOM_PREFIX):
        arch, seed = _random_spec(name)
        return claimant("random_archs", arch).load_random(arch, seed, options)
    if zoo.is_zoo_name(name):
        path = zoo.resolve(name)
    else:
        try:
            path = checkpoint.resolve(name)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}\nBuilt-in encoders: {builtin_names()}") from err
    path = model_folder(path)
    model_type = folder_model_type(path)
    family = claimant("model_types", model_type)
    if family is None:
        raise ValueError(
            f"{path / 'config.json'}: model_type {model_type!r} is not supported; expected one "
            f"of {claimed('model_types')} (families: {', '.join(FAMILIES)}; "
            f"encoders.registry.register_family adds one)")
    return family.load(path, options)


def folder_model_type(path: Path) -> Optional[str]:
    """The ``model_type`` of a model folder's ``config.json`` (:data:`CT2_MODEL_TYPE` for a
    CTranslate2 directory); a ``speechmi run`` folder, whose config.json is no model's, is
    refused."""
    config_path = path / "config.json"
    config = checkpoint.read_config(config_path) if config_path.exists() else {}
    model_type = config.get("model_type")
    if model_type is None and (path / "model.bin").exists():
        return CT2_MODEL_TYPE
    if model_type is None and (path / "parts").is_dir():
        raise FileNotFoundError(f"{path} is a `speechmi run` folder (its config.json is the run's "
                                f"config), not a model; expected a model directory")
    return model_type


def model_folder(path: Path) -> Path:
    """The model directory a local folder stands for: the folder itself when it holds model
    files, the exported ``model/`` of a ``speechmi pretrain`` run folder (logged); otherwise a
    FileNotFoundError naming the files looked for and where the models are (a population's
    ``member-<i>/model``, a run stopped before its export)."""
    if (path / "config.json").exists() or (path / "model.bin").exists():
        return path
    if (path / "model" / "config.json").exists():
        log.info("%s is a pretraining run folder: loading its exported encoder %s", path,
                 path / "model")
        return path / "model"
    looked = (f"{path}: no model files (looked for config.json with model.safetensors, the "
              f"Hugging Face layout, or model.bin, a CTranslate2 Whisper model)")
    members = sorted(p.parent for p in path.glob("member-*/model/config.json"))
    if members:
        raise FileNotFoundError(f"{looked}; it is a pretraining run of {len(members)} models: "
                                f"load one of {', '.join(str(m) for m in members)}")
    if (path / "pretrain_config.json").exists():
        steps = sorted((p.parent for p in path.glob("models/step*/config.json")),
                       key=lambda p: int(p.name[4:]) if p.name[4:].isdigit() else -1)
        where = (f"; the models along training: {', '.join(str(m) for m in steps)}" if steps
                 else "")
        raise FileNotFoundError(f"{looked}; it is a pretraining run folder whose model/ is not "
                                f"exported yet (the run has not finished: run the same "
                                f"`speechmi pretrain` command to finish it){where}")
    held = sorted(p.name for p in path.iterdir())[:10]
    raise FileNotFoundError(f"{looked}; it holds {held}")


def random_archs() -> list[str]:
    """Architectures ``random:<arch>`` accepts (every registered family's)."""
    return claimed("random_archs")


def available_encoders() -> list[str]:
    """Every built-in name :func:`load_encoder` accepts: the baselines, the Whisper built-ins
    (loadable once the ``demo`` extra is installed), ``random:<arch>`` for each architecture (any
    ``@<seed>`` may follow) and the zoo's models with each shipped checkpoint (``<name>@step<N>``)."""
    return (claimed("builtins") + [f"{RANDOM_PREFIX}{a}" for a in random_archs()]
            + zoo.entries())


def builtin_names() -> str:
    """The built-in encoder names, for error messages (:func:`available_encoders` with the random
    controls and the zoo's checkpoints folded into their patterns)."""
    plain = [n for n in available_encoders() if not n.startswith(RANDOM_PREFIX) and "@" not in n]
    return (f"{', '.join(plain)}, <zoo model>@step<N> (all listed by `speechmi encoders`), "
            f"random:<arch>[@<seed>] with <arch> one of {', '.join(random_archs())}")


def _random_spec(name: str) -> tuple[str, int]:
    """``random:<arch>[@<seed>]`` -> (arch, seed); a bad arch or seed raises naming both forms."""
    arch, _, seed = name[len(RANDOM_PREFIX):].partition("@")
    if arch not in random_archs():
        raise ValueError(f"{name!r}: unknown architecture {arch!r}; expected random:<arch>"
                         f"[@<seed>] with <arch> one of {random_archs()}")
    try:
        return arch, int(seed) if seed else 0
    except ValueError:
        raise ValueError(f"{name!r}: seed {seed!r} is not an integer; expected "
                         f"random:{arch}@<int seed>, e.g. random:{arch}@1") from None
