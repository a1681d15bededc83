"""HuBERT-style masked prediction of k-means ids (Hsu et al. 2021), iteration 1 or 2.

Iteration 1 (targets: k-means of MFCC, K = 50):

    speechmi pretrain hubert --out runs/hubert-it1

Iteration 2 (targets: k-means of layer 1, the middle of the 2-layer iteration-1 model):

    speechmi pretrain hubert --out runs/hubert-it2 --set targets.source=runs/hubert-it1/model \
        --set targets.layer=1

H(Z_target) is the plug-in entropy of the fitted ids over the training frames (logged).

Trains the log-mel transformer (bidirectional); ``--set model.backbone=conv`` trains the
wav2vec2-family conv-stem model of ``model.hf_config`` instead, exported in the transformers
layout.
"""

from speechmi_jax.configs.pretrain import common


def get_config(arg: str = ""):
    c = common.base_config()
    c.objective = "hubert"
    c.model.hf_config = dict(model_type="hubert", **common.SMALL_BACKBONE, **common.HUBERT_POS)
    return common.finish(c, arg, "hubert")
