"""``load_encoder``: one entry point from a name or a path to an :class:`Encoder`.

Accepted forms:

* ``"logmel"``, ``"mfcc"`` - classic single-layer feature baselines.
* ``"whisper-tiny.en"``, ``"whisper-base"`` - real Whisper weights shipped by installed
  packages (the ``demo`` extra); a clear error says what to install when absent.
* ``"random:<arch>"`` (e.g. ``random:hubert-base``, ``random:whisper-tiny``) - the
  random-init control of an architecture; ``random:<arch>@<seed>`` picks the seed.
* a local directory in Hugging Face format (``config.json`` + ``model.safetensors``) or a
  CTranslate2 Whisper directory (``model.bin``).
* a hub id (``facebook/hubert-base-ls960``), resolved through the local Hugging Face cache
  only: nothing is downloaded unless the user allows it (see ``checkpoint.resolve``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jax.numpy as jnp

from speechmi_jax.encoders.base import Encoder

BASELINES = ("logmel", "mfcc")
WHISPER_BUILTINS = ("whisper-tiny.en", "whisper-base")
WAV2VEC2_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


def load_encoder(name_or_path: str | os.PathLike, *, dtype=jnp.float32,
                 allow_pickle: bool = False) -> Encoder:
    """Loads an encoder by name, local path or hub id (see the module docstring).

    Args:
      name_or_path: what to load.
      dtype: compute dtype of the forward pass (float32 default; bfloat16 for accelerators).
        Hidden states are returned in this dtype; parameters stay float32.
      allow_pickle: allow ``pytorch_model.bin`` (pickle executes code; loaded with
        ``torch.load(weights_only=True)``) when no ``model.safetensors`` exists.
    """
    name = os.fspath(name_or_path)
    if name in BASELINES:
        from speechmi_jax.encoders import baselines
        return baselines.load_baseline(name)
    if name.startswith("random:"):
        arch, _, seed = name[len("random:"):].partition("@")
        seed_i = int(seed) if seed else 0
        if arch.startswith("whisper"):
            from speechmi_jax.encoders import whisper
            return whisper.random_whisper(arch, seed=seed_i, dtype=dtype)
        from speechmi_jax.encoders import wav2vec2
        return wav2vec2.random_wav2vec2_family(arch, seed=seed_i, dtype=dtype)
    if name in WHISPER_BUILTINS:
        from speechmi_jax.encoders import whisper
        return whisper.load_whisper_builtin(name, dtype=dtype)

    from speechmi_jax.encoders import checkpoint
    path = checkpoint.resolve(name)
    config_path = path / "config.json"
    config = json.loads(config_path.read_text()) if config_path.exists() else {}
    # CTranslate2 directories hold model.bin and a config.json without model_type.
    if (path / "model.bin").exists() and "model_type" not in config:
        from speechmi_jax.encoders import whisper
        return whisper.load_whisper_ct2(path, dtype=dtype)
    if not config_path.exists():
        raise FileNotFoundError(f"{path}: no config.json (expected a Hugging Face model directory)")
    model_type = config.get("model_type")
    if model_type == "whisper":
        from speechmi_jax.encoders import whisper
        return whisper.load_whisper_hf(path, dtype=dtype, allow_pickle=allow_pickle)
    if model_type == "speechmi-causal-logmel":  # APC pretraining's causal encoder (ssl/)
        from speechmi_jax.encoders import wav2vec2
        return wav2vec2.load_causal(path, dtype=dtype)
    if model_type in WAV2VEC2_FAMILY:
        from speechmi_jax.encoders import wav2vec2
        return wav2vec2.load_wav2vec2_family(path, dtype=dtype, allow_pickle=allow_pickle)
    raise ValueError(
        f"{config_path}: model_type {model_type!r} is not supported; expected one of "
        f"{WAV2VEC2_FAMILY + ('whisper',)}")
