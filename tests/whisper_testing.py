"""Helpers shared by the Whisper tests: a tiny transformers config and weight perturbation."""

import torch
import transformers


def tiny_config(**kw):
    """WhisperConfig with d_model 16, 2 encoder layers, 2 heads and the real 1500 positions."""
    base = dict(vocab_size=64, num_mel_bins=80, encoder_layers=2, encoder_attention_heads=2,
                decoder_layers=1, decoder_attention_heads=2, d_model=16, encoder_ffn_dim=32,
                decoder_ffn_dim=32, max_source_positions=1500, max_target_positions=16,
                decoder_start_token_id=1, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    base.update(kw)
    return transformers.WhisperConfig(**base)


def perturbed(model, seed=0, scale=0.1):
    """Adds N(0, scale) noise to every parameter (non-trivial biases and norms); eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model.eval()
