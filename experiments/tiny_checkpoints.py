"""Tiny random Hugging Face checkpoints of the wav2vec 2.0 family, for the ``--smoke`` runs.

    python experiments/tiny_checkpoints.py /tmp/tiny            # base-style (post-LN) models
    python experiments/tiny_checkpoints.py /tmp/tiny --large    # large-style (pre-LN) models

writes one folder per family (``config.json`` + ``model.safetensors``, exactly what
``save_pretrained`` writes for the real hub checkpoints) and prints the ``--set encoders=...``
argument that points a config's smoke run at them. The models keep the real feature
encoder's kernels and strides (20 ms hop, 25 ms receptive field, 50 frames/s) and the real
family switches (post-LN vs "stable layer norm" pre-LN, HuBERT/WavLM/data2vec positional
convolutions, WavLM's relative position buckets), with a hidden size of 32 and 2 layers, so
every code path of the big models runs in seconds on a CPU.

Needs ``torch`` and ``transformers`` (the ``test`` extra): the weights are transformers' own
random initialisation, written by its own serializer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

FAMILIES = {  # model_type -> transformers config class, model class
    "wav2vec2": ("Wav2Vec2Config", "Wav2Vec2Model"),
    "hubert": ("HubertConfig", "HubertModel"),
    "wavlm": ("WavLMConfig", "WavLMModel"),
    "data2vec-audio": ("Data2VecAudioConfig", "Data2VecAudioModel"),
}

# The real 7-layer feature encoder (hop 320 samples) with 16 channels; a 2-layer transformer.
TINY = dict(conv_dim=(16,) * 7, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
TINY_FAMILY = {
    "data2vec-audio": dict(num_conv_pos_embeddings=2, conv_pos_kernel_size=5),
    "wavlm": dict(num_buckets=16, max_bucket_distance=20),
}
# What the large hub checkpoints switch on (wav2vec2-large-lv60, hubert-large-ll60k, wavlm-large
# are pre-LN; data2vec-audio-large is not: its config has no such switch).
LARGE_STYLE = {
    "wav2vec2": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    "hubert": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    "wavlm": dict(feat_extract_norm="layer", do_stable_layer_norm=True, conv_bias=True),
    "data2vec-audio": dict(),
}


def tiny_config(family: str, large: bool = False):
    """The transformers config of a tiny ``family`` model (base- or large-style switches)."""
    import transformers

    if family not in FAMILIES:
        raise ValueError(f"family {family!r}: expected one of {sorted(FAMILIES)}")
    kwargs = dict(TINY, **TINY_FAMILY.get(family, {}), **(LARGE_STYLE[family] if large else {}))
    return getattr(transformers, FAMILIES[family][0])(**kwargs)


def write_tiny_checkpoints(out_dir, families=tuple(FAMILIES), *, large: bool = False,
                           seed: int = 0) -> list[str]:
    """Writes ``<out_dir>/tiny-<family>-<base|large>/`` for each family -> their paths."""
    import torch
    import transformers

    paths = []
    for i, family in enumerate(families):
        config = tiny_config(family, large)
        torch.manual_seed(seed + i)
        model = getattr(transformers, FAMILIES[family][1])(config).eval()
        path = Path(out_dir) / f"tiny-{family}-{'large' if large else 'base'}"
        model.save_pretrained(path, safe_serialization=True)
        if not (path / "model.safetensors").is_file():
            raise RuntimeError(f"{path}: save_pretrained wrote no model.safetensors")
        paths.append(str(path))
    return paths


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--large", action="store_true", help="pre-LN switches of the large models")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    paths = write_tiny_checkpoints(args.out_dir, large=args.large, seed=args.seed)
    print(f"--set encoders={json.dumps(json.dumps(paths))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
