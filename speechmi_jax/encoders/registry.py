"""``load_encoder``: one entry point from a name or a path to an :class:`Encoder`.

Accepted forms:

* ``"logmel"``, ``"mfcc"`` - classic single-layer feature baselines; ``"logmel-stack4"`` -
  log-mel with the 4 frames on either side stacked (context alone, no learning).
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

``window_seconds`` sets a Whisper encoder's analysis window (``encoders/whisper.py``),
decided by what was loaded, never by the name; encoders without a fixed window (the
wav2vec 2.0 family, the baselines) have nothing to set and ignore it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional

import jax.numpy as jnp

from speechmi_jax.encoders.base import Encoder
from speechmi_jax import zoo
from speechmi_jax.encoders import baselines, checkpoint, logmel_transformer, wav2vec2, whisper

log = logging.getLogger("speechmi_jax.encoders")
BASELINES = ("logmel", "logmel-stack4", "mfcc")
WHISPER_BUILTINS = ("whisper-tiny.en", "whisper-base")
WAV2VEC2_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


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
    return _load(os.fspath(name_or_path), dtype, allow_pickle, window_seconds)


def _load(name: str, dtype, allow_pickle: bool, window_seconds: Optional[float]) -> Encoder:
    if name in BASELINES:
        return baselines.load_baseline(name)
    if name.startswith("random:"):
        arch, seed_i = _random_spec(name)
        if arch.startswith("whisper"):
            return whisper.random_whisper(arch, seed=seed_i, dtype=dtype,
                                          window_seconds=window_seconds)
        return wav2vec2.random_wav2vec2_family(arch, seed=seed_i, dtype=dtype)
    if name in WHISPER_BUILTINS:
        return whisper.load_whisper_builtin(name, dtype=dtype, window_seconds=window_seconds)

    if zoo.is_zoo_name(name):
        path = zoo.resolve(name)
    else:
        try:
            path = checkpoint.resolve(name)
        except FileNotFoundError as err:
            raise FileNotFoundError(f"{err}\nBuilt-in encoders: {builtin_names()}") from err
    path = model_folder(path)
    config_path = path / "config.json"
    config = checkpoint.read_config(config_path) if config_path.exists() else {}
    # CTranslate2 directories hold model.bin and a config.json without model_type.
    if (path / "model.bin").exists() and "model_type" not in config:
        return whisper.load_whisper_ct2(path, dtype=dtype, window_seconds=window_seconds)
    model_type = config.get("model_type")
    if model_type is None and (path / "parts").is_dir():
        raise FileNotFoundError(f"{path} is a `speechmi run` folder (its config.json is the run's "
                                f"config), not a model; expected a model directory")
    if model_type == "whisper":
        return whisper.load_whisper_hf(path, dtype=dtype, allow_pickle=allow_pickle,
                                       window_seconds=window_seconds)
    if model_type in logmel_transformer.MODEL_TYPES:  # the pretraining zoo's backbone (ssl/)
        return logmel_transformer.load(path, dtype=dtype)
    if model_type in WAV2VEC2_FAMILY:
        return wav2vec2.load_wav2vec2_family(path, dtype=dtype, allow_pickle=allow_pickle)
    raise ValueError(
        f"{config_path}: model_type {model_type!r} is not supported; expected one of "
        f"{WAV2VEC2_FAMILY + ('whisper',) + logmel_transformer.MODEL_TYPES}")


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
    """Architectures ``random:<arch>`` accepts."""
    return sorted(wav2vec2.RANDOM_ARCHS) + sorted(whisper.ARCHS)


def available_encoders() -> list[str]:
    """Every built-in name :func:`load_encoder` accepts: the baselines, the Whisper built-ins
    (loadable once the ``demo`` extra is installed), ``random:<arch>`` for each architecture (any
    ``@<seed>`` may follow) and the zoo's models with each shipped checkpoint (``<name>@step<N>``)."""
    return (list(BASELINES + WHISPER_BUILTINS) + [f"random:{a}" for a in random_archs()]
            + zoo.entries())


def builtin_names() -> str:
    """The built-in encoder names, for error messages (:func:`available_encoders` with the random
    controls and the zoo's checkpoints folded into their patterns)."""
    plain = [n for n in available_encoders() if not n.startswith("random:") and "@" not in n]
    return (f"{', '.join(plain)}, <zoo model>@step<N> (all listed by `speechmi encoders`), "
            f"random:<arch>[@<seed>] with <arch> one of {', '.join(random_archs())}")


def _random_spec(name: str) -> tuple[str, int]:
    """``random:<arch>[@<seed>]`` -> (arch, seed); a bad arch or seed raises naming both forms."""
    arch, _, seed = name[len("random:"):].partition("@")
    if arch not in random_archs():
        raise ValueError(f"{name!r}: unknown architecture {arch!r}; expected random:<arch>"
                         f"[@<seed>] with <arch> one of {random_archs()}")
    try:
        return arch, int(seed) if seed else 0
    except ValueError:
        raise ValueError(f"{name!r}: seed {seed!r} is not an integer; expected "
                         f"random:{arch}@<int seed>, e.g. random:{arch}@1") from None
