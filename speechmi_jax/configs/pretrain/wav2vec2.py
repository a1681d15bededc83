"""wav2vec 2.0 (Baevski et al. 2020): the masked context picks the quantized latent of each masked
frame among 10 distractors (cosine / 0.1); a Gumbel product quantizer (2 groups x 32 codes) makes
the learned target and a diversity loss (weight 0.1; ``--set wav2vec2.diversity_weight=0`` turns
it off) keeps its codebook in use. Logs the InfoNCE bound log2(K + 1) - L and the perplexity.

    speechmi pretrain wav2vec2 --out runs/wav2vec2
    speechmi pretrain wav2vec2 --smoke --out runs/wav2vec2-smoke

Trains the log-mel transformer (bidirectional); ``--set model.backbone=conv`` trains the
wav2vec2-family conv-stem model of ``model.hf_config`` instead, exported in the transformers
layout.
"""

from speechmi_jax.configs.pretrain import common


def get_config(arg: str = ""):
    c = common.base_config()
    c.objective = "wav2vec2"
    c.model.hf_config = dict(model_type="wav2vec2", **common.SMALL_BACKBONE, **common.HUBERT_POS)
    return common.finish(c, arg, "wav2vec2")
