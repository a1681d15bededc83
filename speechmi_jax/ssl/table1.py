"""The built-in SSL objectives: Table 1 of Liu, Yeh & Glass (ICASSP 2024), one row each.

Import this module to look objectives up (:func:`objective`, :func:`names`): it registers the
built-in rows in :mod:`speechmi_jax.ssl.registry`, where plug-ins register theirs.

| name | family | views | Z_target | p_psi | H(Z_target) |
| --- | --- | --- | --- | --- | --- |
| apc | APC | frames <= t -> frame t+n | input log-mel frame | Gaussian (or Laplace) on the residual | Gaussian entropy of the targets |
| vqapc | APC | same, context through a Gumbel VQ | input log-mel frame | same | same; codebook perplexity logged |
| hubert | MLM | unmasked -> masked frames | k-means ids | softmax over K | plug-in entropy of the ids |
| data2vec | MLM | masked student -> EMA teacher | mean of the teacher's top-k layers | diagonal Gaussian | Gaussian entropy of the (learned) targets |
| wav2vec2 | MLM | masked context -> quantized latent | Gumbel product-quantizer code | softmax over cosines with K distractors | proxy G log2(perplexity / G) |
"""

from __future__ import annotations

import numpy as np

from speechmi_jax import distributed
from speechmi_jax.ssl import data as data_lib
from speechmi_jax.ssl import models
from speechmi_jax.ssl.registry import Objective, get, names, register


def _apc(config, backbone, ctx):
    m = config.model
    return models.APCTask(backbone.arch, vq_codes=m.vq_codes if config.objective == "vqapc" else 0,
                          vq_temperature=m.vq_temperature, p_psi=config.p_psi, name=config.objective,
                          past_frames=m.past_frames, dropout=backbone.dropout)


def _masked_settings(config) -> dict:
    return dict(mask_span=config.mask_span, top_k=config.data2vec.top_k,
                normalize_targets=config.data2vec.normalize_targets,
                ema_decay=config.data2vec.ema_decay, **dict(config.wav2vec2))


def _masked(config, backbone, ctx):
    return models.MaskedTask(config.objective, backbone, **_masked_settings(config))


def _hubert(config, backbone, ctx):
    """Fits k-means targets (or assigns ``ctx.centroids``) and saves them to ``targets.npz``."""
    t = config.targets
    info = data_lib.cluster_targets(
        ctx.corpus, ctx.sets, source=t.source, layer=t.layer, k=t.k, dst_rate=backbone.frame_rate,
        dst_offset_s=backbone.frame_offset_s, num_frames_fn=backbone.num_frames,
        cache_dir=ctx.out_dir / "cache", seed=t.seed, iters=t.iters, max_frames=t.max_frames,
        centroids=ctx.centroids)
    # The fitted centroids, to recompute the targets of other audio later (e.g. a model card).
    if distributed.is_main():
        np.savez(ctx.out_dir / "targets.npz", centroids=np.asarray(info["centroids"]),
                 source=str(t.source), layer=t.layer, h_target_bits=info["h_target_bits"])
    return models.MaskedTask("hubert", backbone, num_codes=t.k, h_target_bits=info["h_target_bits"],
                             unmasked_weight=t.unmasked_weight, **_masked_settings(config))


APC_H = "Gaussian entropy of the targets (an estimate; cancels between models with one target)"
register(Objective("apc", "APC", "frames <= t -> frame t+n", "input log-mel frame",
                   "Gaussian (or Laplace) on the residual", APC_H, _apc, causal=True))
register(Objective("vqapc", "APC", "frames <= t, through a Gumbel VQ -> frame t+n",
                   "input log-mel frame", "Gaussian (or Laplace) on the residual",
                   APC_H + "; codebook perplexity logged", _apc, causal=True))
register(Objective("hubert", "MLM", "unmasked frames -> masked frame",
                   "k-means ids (MFCC, then a layer of iteration 1)", "softmax over K codes",
                   "plug-in entropy of the ids (<= log2 K)", _hubert))
register(Objective("data2vec", "MLM", "masked student -> EMA teacher",
                   "mean of the teacher's top-k layers (learned)", "diagonal Gaussian on the residual",
                   "Gaussian entropy of the targets; can collapse", _masked, learned_target=True))
register(Objective("wav2vec2", "MLM", "masked context -> quantized latent",
                   "Gumbel product-quantizer code (learned)",
                   "softmax over cosines with K distractors (bound log2(K + 1) - L)",
                   "proxy G log2(perplexity / G); kept up by a diversity loss", _masked,
                   learned_target=True))

objective = get
__all__ = ["objective", "names", "register", "Objective"]
