"""Checkpoint resolution and state-dict reading for Hugging Face format model directories.

Shared by every loader of PyTorch-trained weights (wav2vec 2.0 family, Whisper):

* :func:`resolve` turns a local directory or a hub id (``facebook/hubert-base-ls960``) into
  a local directory. Hub ids are looked up in the local Hugging Face cache only
  (``HF_HUB_CACHE``, else the ``huggingface_hub`` default); nothing is downloaded unless
  the caller passes ``allow_download=True`` and ``HF_HUB_OFFLINE`` is unset.
* :func:`read_state_dict` reads ``model.safetensors`` (single or sharded) with the
  safetensors numpy API. ``pytorch_model.bin`` is read only with ``allow_pickle=True``
  (pickle runs code), through ``torch.load(weights_only=True)``; torch is imported there
  and nowhere else.
* :func:`check_state_dict` compares expected against found keys and shapes and raises one
  error that names every missing, unexpected and misshaped key with both shapes.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

SAFETENSORS = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
PICKLE = "pytorch_model.bin"
PICKLE_INDEX = "pytorch_model.bin.index.json"
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


class CheckpointError(ValueError):
    """A checkpoint does not hold what the model expects (keys, shapes, files)."""


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on")


def resolve(name_or_path: str | os.PathLike, *, revision: str | None = None,
            allow_download: bool = False) -> Path:
    """A local model directory for a path or a hub id.

    Args:
      name_or_path: an existing directory, or a hub id ``owner/name``.
      revision: hub revision (branch, tag or commit) to look up in the cache; default main.
      allow_download: fetch a hub id that is not cached. Ignored (no download) when
        ``HF_HUB_OFFLINE=1``.

    Returns:
      The directory holding ``config.json`` and the weights.

    Raises:
      FileNotFoundError: a path that does not exist, or a hub id that is not in the cache
        while downloads are off; the message names the cache directory searched.
    """
    name = os.fspath(name_or_path)
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if not _HUB_ID.fullmatch(name) or path.suffix in (".safetensors", ".bin", ".json"):
        raise FileNotFoundError(f"{name}: no such model directory (and not a hub id owner/name)")

    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache_dir = os.environ.get("HF_HUB_CACHE") or None
    download = allow_download and not _hub_offline()
    try:
        snapshot = snapshot_download(name, revision=revision, cache_dir=cache_dir,
                                     local_files_only=not download)
    except LocalEntryNotFoundError as err:
        from huggingface_hub import constants
        searched = cache_dir or constants.HF_HUB_CACHE
        why = ("HF_HUB_OFFLINE=1" if _hub_offline() else "downloads are off (allow_download=False)")
        raise FileNotFoundError(
            f"{name}: not a local directory and not in the Hugging Face cache {searched} "
            f"({why}). Download it on a machine with network access "
            f"(huggingface_hub.snapshot_download({name!r})) and copy the cache, or pass a "
            f"local directory with config.json and model.safetensors.") from err
    return Path(snapshot)


def read_config(path: str | os.PathLike) -> dict:
    """A JSON object file of a model directory (``config.json``, a shard index) as a dict; a
    file that is not a JSON object raises :class:`CheckpointError` naming it."""
    try:
        config = json.loads(Path(path).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{os.fspath(path)}: not valid JSON ({e}); expected a Hugging Face "
                              f"model config") from e
    if not isinstance(config, dict):
        raise CheckpointError(f"{os.fspath(path)}: holds a JSON {type(config).__name__}; expected "
                              f"an object (a Hugging Face model config)")
    return config


def _read_safetensors(files: Sequence[Path]) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    out: dict[str, np.ndarray] = {}
    for f in files:
        try:
            out.update(load_file(os.fspath(f)))
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{f}: not a readable safetensors file ({e}); expected the "
                                  f"weights as safetensors writes them") from e
    return out


def _read_pickle(files: Sequence[Path]) -> dict[str, np.ndarray]:
    import torch  # only for pickle checkpoints, opted into by the caller

    out: dict[str, np.ndarray] = {}
    for f in files:
        state = torch.load(os.fspath(f), map_location="cpu", weights_only=True)
        for key, value in state.items():
            value = value.detach()
            if value.dtype in (torch.bfloat16, torch.float16):
                value = value.float()
            out[key] = value.numpy()
    return out


def _shards(directory: Path, index_name: str) -> list[Path]:
    index = read_config(directory / index_name)
    if not isinstance(index.get("weight_map"), dict):
        raise CheckpointError(f"{directory / index_name}: no 'weight_map' object; expected a "
                              f"shard index {{'weight_map': {{key: file}}}}")
    names = sorted(set(index["weight_map"].values()))
    missing = [n for n in names if not (directory / n).exists()]
    if missing:
        raise FileNotFoundError(f"{directory / index_name}: shard files missing: {missing}")
    return [directory / n for n in names]


def read_state_dict(directory: str | os.PathLike, allow_pickle: bool = False) -> dict[str, np.ndarray]:
    """All tensors of a Hugging Face checkpoint directory as numpy arrays (PyTorch key names).

    Looks for, in order: ``model.safetensors``, ``model.safetensors.index.json`` (shards),
    then ``pytorch_model.bin`` / ``pytorch_model.bin.index.json`` (only with
    ``allow_pickle=True``; float16/bfloat16 tensors are widened to float32 there).

    Raises:
      PermissionError: only a pickle checkpoint exists and ``allow_pickle`` is False.
      FileNotFoundError: no weights file at all.
    """
    directory = Path(directory)
    if (directory / SAFETENSORS).exists():
        return _read_safetensors([directory / SAFETENSORS])
    if (directory / SAFETENSORS_INDEX).exists():
        return _read_safetensors(_shards(directory, SAFETENSORS_INDEX))
    pickles = ([directory / PICKLE] if (directory / PICKLE).exists() else
               _shards(directory, PICKLE_INDEX) if (directory / PICKLE_INDEX).exists() else [])
    if pickles:
        if not allow_pickle:
            raise PermissionError(
                f"{pickles[0]}: only a pickle checkpoint exists, and unpickling can run code. "
                f"Pass allow_pickle=True to load it (read with torch.load(weights_only=True)), "
                f"or convert it to {SAFETENSORS}.")
        return _read_pickle(pickles)
    raise FileNotFoundError(
        f"{directory}: no weights found (expected {SAFETENSORS}, {SAFETENSORS_INDEX}, or with "
        f"allow_pickle=True {PICKLE})")


def check_state_dict(expected: Mapping[str, tuple[int, ...]], found: Mapping[str, np.ndarray],
                     source: str | os.PathLike) -> None:
    """Raises :class:`CheckpointError` unless ``found`` has exactly the expected keys and shapes.

    The message lists every missing key (with its expected shape), every unexpected key
    (with its shape) and every key whose shape differs (expected vs found).
    """
    problems = []
    for key in sorted(set(expected) - set(found)):
        problems.append(f"missing key {key!r} (expected shape {tuple(expected[key])})")
    for key in sorted(set(found) - set(expected)):
        problems.append(f"unexpected key {key!r} (shape {tuple(np.shape(found[key]))})")
    for key in sorted(set(expected) & set(found)):
        want, got = tuple(expected[key]), tuple(np.shape(found[key]))
        if want != got:
            problems.append(f"key {key!r} has shape {got}, expected {want}")
    if problems:
        raise CheckpointError(f"{os.fspath(source)}: checkpoint does not match the model config:\n  "
                              + "\n  ".join(problems))
