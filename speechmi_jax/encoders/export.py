"""Flax wav2vec 2.0 family parameters -> a Hugging Face model directory that ``transformers`` loads.

The inverse of :func:`speechmi_jax.encoders.wav2vec2.params_from_state_dict`, built on the same
key map (``wav2vec2.param_entries``: Flax path <- PyTorch keys and shapes), each conversion
inverted:

  Dense kernel [in, out]              -> Linear weight [out, in]
  conv kernel [K, C_in, C_out]        -> Conv1d weight [C_out, C_in, K]
  positional conv kernel (resolved)   -> weight norm (dim 2) as transformers 5 spells it:
                                         ``parametrizations.weight.original0`` g [1, 1, K] = the
                                         norm of each tap, ``original1`` v [D, D / G, K] = the kernel
  per-layer leaves [L, ...]           -> ``encoder.layers.{l}.*``; WavLM's gate const [H] -> [1, H, 1, 1]

Every written state dict is converted back with ``params_from_state_dict`` and compared with the
input before anything is written, so the map cannot drift from the loader's.

``save_hf(config, params, out_dir)`` writes ``config.json`` (the transformers config, with
``architectures`` set) and ``model.safetensors`` (base-model keys, no task prefix). The result
loads with ``smi.load_encoder(out_dir)`` and with ``transformers.AutoModel.from_pretrained``.

wav2vec 2.0 pretraining head: ``save_hf(..., pretraining_head=head)`` writes transformers'
``Wav2Vec2ForPreTraining`` layout instead (backbone under ``wav2vec2.``, plus ``quantizer.*``,
``project_q.*``, ``project_hid.*``), so a model pretrained here resumes in transformers with its
quantizer. ``head`` is the Flax tree

  {"quantizer": GumbelProductQuantizer params {"weight_proj": {kernel [C, G V], bias [G V]},
                                               "codevectors": [1, G V, codevector_dim / G]},
   "project_q":   Dense params {kernel [codevector_dim, P], bias [P]},
   "project_hid": Dense params {kernel [D, P], bias [P]}}

with C = conv_dim[-1], G = num_codevector_groups, V = num_codevectors_per_group, P =
proj_codevector_dim, all from the config. :func:`read_pretraining_head` reads it back.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Mapping

import jax
import numpy as np

from speechmi_jax.encoders import checkpoint, wav2vec2

# model_type -> transformers base-model class (what AutoModel builds from config.json)
MODEL_CLASSES = {"wav2vec2": "Wav2Vec2Model", "hubert": "HubertModel", "wavlm": "WavLMModel",
                 "data2vec-audio": "Data2VecAudioModel"}
# Buffers torch keeps in the state dict that the Flax forward pass does not use.
_BATCHES_TRACKED = "encoder.pos_conv_embed.batch_norm.num_batches_tracked"


def _get(tree, path: tuple[str, ...], what: str, key: str) -> np.ndarray:
    """The leaf at ``path`` as float32 numpy; a clear error naming it when absent."""
    for name in path:
        if not isinstance(tree, Mapping) or name not in tree:
            raise checkpoint.CheckpointError(f"{what}: missing leaf {'/'.join(path)} (needed for {key})")
        tree = tree[name]
    return np.asarray(jax.device_get(tree), np.float32)


def _leaf(params, entry) -> np.ndarray:
    value = _get(params, entry.path, "params", entry.sources[0][0])
    return value if entry.layer is None else value[entry.layer]


def _weight_norm_parts(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """w [D, D/G, K] -> (g [1, 1, K], v [D, D/G, K]) with g * v / ||v|| = w (norm over dims 0, 1)."""
    norm = np.sqrt(np.sum(w.astype(np.float64) ** 2, axis=(0, 1), keepdims=True))
    v = np.where(norm > 0, w, 1.0)  # an all-zero tap: g = 0 and any v
    return norm.astype(np.float32), v.astype(np.float32)


def _to_torch(entry, value: np.ndarray) -> list[np.ndarray]:
    """The PyTorch tensors of one :class:`wav2vec2.ParamEntry` from its Flax value."""
    if len(entry.sources) == 2:  # the weight-normed positional conv
        return list(_weight_norm_parts(value.transpose(2, 1, 0)))
    if entry.fn is wav2vec2.torch_linear:
        return [value.T]
    if entry.fn is wav2vec2.torch_conv:
        return [value.transpose(2, 1, 0)]
    return [value.reshape(entry.sources[0][1])]  # copies and reshapes (WavLM's gate const)


def state_dict_from_params(arch: wav2vec2.Arch, params) -> dict[str, np.ndarray]:
    """transformers state dict (base-model keys) of :class:`wav2vec2.Wav2Vec2Family` params.

    Raises :class:`checkpoint.CheckpointError` for a missing leaf or a misshaped tensor, naming it.
    """
    state: dict[str, np.ndarray] = {}
    for entry in wav2vec2.param_entries(arch):
        tensors = _to_torch(entry, _leaf(params, entry))
        for (key, shape), tensor in zip(entry.sources, tensors):
            if tuple(tensor.shape) != tuple(shape):
                raise checkpoint.CheckpointError(
                    f"params/{'/'.join(entry.path)}: gives {key} of shape {tuple(tensor.shape)}, "
                    f"expected {tuple(shape)} for this config")
            state[key] = np.ascontiguousarray(tensor, np.float32)
    # The loader's own conversion must give the input back (1-ulp slack: the weight-norm round trip).
    back = wav2vec2.params_from_state_dict(state, arch, source="<exported state dict>")
    flat = dict(jax.tree_util.tree_leaves_with_path(jax.device_get(params)))
    for path, value in jax.tree_util.tree_leaves_with_path(back):
        if not np.allclose(value, np.asarray(flat[path]), rtol=1e-6, atol=1e-7):
            raise AssertionError(f"export of {jax.tree_util.keystr(path)} does not round-trip")
    if arch.pos_conv == "batch_norm":
        state[_BATCHES_TRACKED] = np.zeros((), np.int64)
    return state


def _as_config(config):
    if isinstance(config, Mapping):
        from transformers import AutoConfig
        rest = dict(config)
        model_type = rest.pop("model_type", None)
        if model_type is None:
            raise ValueError("config: a dict needs a model_type")
        return AutoConfig.for_model(model_type, **rest)
    return copy.deepcopy(config)


def _head_shapes(config) -> dict[str, tuple[int, ...]]:
    """Torch key -> shape of Wav2Vec2ForPreTraining's head for this config."""
    g, v = config.num_codevector_groups, config.num_codevectors_per_group
    dim, proj = config.codevector_dim, config.proj_codevector_dim
    if dim % g:
        raise ValueError(f"config: codevector_dim={dim} is not divisible by num_codevector_groups={g}")
    return {"quantizer.codevectors": (1, g * v, dim // g),
            "quantizer.weight_proj.weight": (g * v, config.conv_dim[-1]),
            "quantizer.weight_proj.bias": (g * v,),
            "project_q.weight": (proj, dim), "project_q.bias": (proj,),
            "project_hid.weight": (proj, config.hidden_size), "project_hid.bias": (proj,)}


# torch key -> (Flax path in the head tree, transposed?)
_HEAD_KEYS = {
    "quantizer.codevectors": (("quantizer", "codevectors"), False),
    "quantizer.weight_proj.weight": (("quantizer", "weight_proj", "kernel"), True),
    "quantizer.weight_proj.bias": (("quantizer", "weight_proj", "bias"), False),
    "project_q.weight": (("project_q", "kernel"), True),
    "project_q.bias": (("project_q", "bias"), False),
    "project_hid.weight": (("project_hid", "kernel"), True),
    "project_hid.bias": (("project_hid", "bias"), False),
}


def _head_state_dict(config, head) -> dict[str, np.ndarray]:
    shapes = _head_shapes(config)
    state = {}
    for key, (path, transposed) in _HEAD_KEYS.items():
        value = _get(head, path, "pretraining_head", key)
        value = value.T if transposed else value
        if value.shape != shapes[key]:
            raise checkpoint.CheckpointError(
                f"pretraining_head/{'/'.join(path)}: gives {key} of shape {value.shape}, expected "
                f"{shapes[key]} for this config")
        state[key] = np.ascontiguousarray(value)
    return state


def read_pretraining_head(path: str | os.PathLike):
    """The Flax head tree (see the module docstring) of a ``Wav2Vec2ForPreTraining`` directory."""
    from transformers import AutoConfig

    path = Path(path)
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    state = checkpoint.read_state_dict(path)
    shapes = _head_shapes(config)
    checkpoint.check_state_dict(shapes, {k: v for k, v in state.items() if k in shapes}, path)
    head: dict = {}
    for key, (names, transposed) in _HEAD_KEYS.items():
        wav2vec2.set_path(head, names, np.asarray(state[key].T if transposed else state[key], np.float32))
    return head


def save_hf(config, params, out_dir: str | os.PathLike, *, mask_embedding=None,
            pretraining_head=None) -> Path:
    """Writes a transformers model directory: config.json + model.safetensors.

    Args:
      config: the transformers config (``Wav2Vec2Config``, ``HubertConfig``, ``WavLMConfig``,
        ``Data2VecAudioConfig``; ``Encoder.config`` of a loaded or random encoder) or its dict
        with ``model_type``.
      params: :class:`wav2vec2.Wav2Vec2Family` parameters for that config (``Encoder.params``).
      out_dir: created if needed; existing config.json / model.safetensors are replaced.
      mask_embedding: [D], the learned embedding of masked frames (``masked_spec_embed``); when
        None it is not written and transformers initialises it (it only matters for masked
        training).
      pretraining_head: wav2vec2 only; the quantizer and projections (module docstring): writes
        the ``Wav2Vec2ForPreTraining`` layout.

    Returns:
      The output directory.
    """
    from safetensors.numpy import save_file

    config = _as_config(config)
    if config.model_type not in MODEL_CLASSES:
        raise ValueError(f"config: model_type {config.model_type!r} cannot be exported; expected one of "
                         f"{tuple(MODEL_CLASSES)}")
    if pretraining_head is not None and config.model_type != "wav2vec2":
        raise ValueError(f"pretraining_head: only wav2vec2 has a pretraining head layout, config has "
                         f"model_type {config.model_type!r}")
    arch = wav2vec2.arch_from_config(config)
    state = state_dict_from_params(arch, params)
    if mask_embedding is not None:
        emb = np.asarray(jax.device_get(mask_embedding), np.float32)
        if emb.shape != (arch.hidden_size,):
            raise ValueError(f"mask_embedding: expected shape ({arch.hidden_size},), got {emb.shape}")
        state["masked_spec_embed"] = emb
    config.architectures = [MODEL_CLASSES[config.model_type]]
    if pretraining_head is not None:
        state = {f"{wav2vec2.PREFIXES['wav2vec2']}.{k}": v for k, v in state.items()}
        state.update(_head_state_dict(config, pretraining_head))
        config.architectures = ["Wav2Vec2ForPreTraining"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, os.fspath(out / checkpoint.SAFETENSORS), metadata={"format": "pt"})
    config.save_pretrained(out)
    return out
