"""data2vec (Baevski et al. 2022): the masked student regresses the mean of the EMA teacher's top-2
(instance-normalised) layers. The target is learned: its variance is watched by the collapse
guard (``collapse.min_target_var``).

    speechmi pretrain data2vec --out runs/data2vec
    speechmi pretrain data2vec --smoke --out runs/data2vec-smoke

Trains the log-mel transformer (bidirectional); ``--set model.backbone=conv`` trains the
wav2vec2-family conv-stem model of ``model.hf_config`` instead, exported in the transformers
layout.
"""

from speechmi_jax.configs.pretrain import common


def get_config(arg: str = ""):
    c = common.base_config()
    c.objective = "data2vec"
    c.model.hf_config = dict(model_type="data2vec-audio", **common.SMALL_BACKBONE, **common.DATA2VEC_POS)
    return common.finish(c, arg, "data2vec")
