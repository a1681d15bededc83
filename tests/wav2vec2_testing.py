"""Tiny wav2vec 2.0 family checkpoints written by transformers (PyTorch), for parity tests.

Every tensor is perturbed (norm gains, biases, weight-norm gains, BatchNorm statistics) so
that a wrong norm, a dropped bias or a transposed kernel shows up in the outputs.
"""

from __future__ import annotations

import numpy as np
import torch
import transformers

FAMILIES = {
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}

# 3 conv layers (hop 20, receptive field 30 samples), hidden 32, 4 heads.
TINY = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 2), conv_stride=(5, 2, 2), hidden_size=32,
            num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
            num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
TINY_FAMILY = {
    "data2vec-audio": dict(num_conv_pos_embeddings=2, conv_pos_kernel_size=5),
    # distances up to ~80 frames cross max_bucket_distance: exercises the log buckets and the clip
    "wavlm": dict(num_buckets=16, max_bucket_distance=20),
}
PRE_LN = dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True)


def tiny_config(family: str, **overrides):
    kwargs = dict(TINY, **TINY_FAMILY.get(family, {}))
    kwargs.update(overrides)
    return getattr(transformers, FAMILIES[family][0])(**kwargs)


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 0.3) -> torch.nn.Module:
    """Adds noise of relative size ``scale`` to every parameter; randomises BatchNorm stats."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(model.named_parameters()):
            size = p.abs().mean().clamp(min=0.1)
            p.add_(scale * size * torch.randn(p.shape, generator=gen))
        for name, b in sorted(model.named_buffers()):
            if name.endswith("running_mean"):
                b.copy_(0.2 * torch.randn(b.shape, generator=gen))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
    return model.eval()


def torch_model(config, model_cls: str | None = None, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    cls = getattr(transformers, model_cls or FAMILIES[config.model_type][1])
    return perturb_(cls(config), seed)


def backbone(model: torch.nn.Module) -> torch.nn.Module:
    """The base model inside a task model (``Wav2Vec2ForCTC().wav2vec2``) or the model itself."""
    return getattr(model, model.base_model_prefix, model)


def torch_hidden_states(model: torch.nn.Module, waveform: np.ndarray) -> np.ndarray:
    """[L + 1, T, D] for one utterance; the last state is ``last_hidden_state`` (after the
    final LayerNorm of pre-LN models, the package's convention)."""
    base = backbone(model)
    with torch.no_grad():
        out = base(torch.from_numpy(waveform[None].astype(np.float32)), output_hidden_states=True)
    states = [h[0].numpy() for h in out.hidden_states]
    states[-1] = out.last_hidden_state[0].numpy()
    return np.stack(states)
