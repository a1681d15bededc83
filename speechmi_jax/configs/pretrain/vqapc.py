"""VQ-APC (Chung, Tang & Glass 2020): APC with a Gumbel-softmax VQ layer (32 codes) on the causal
encoder's last layer; logs the codebook perplexity besides loss and bound.

    speechmi pretrain vqapc --out runs/vqapc
    speechmi pretrain vqapc --smoke --out runs/vqapc-smoke
"""

from speechmi_jax.configs.pretrain import common


def get_config(arg: str = ""):
    c = common.base_config()
    c.objective = "vqapc"
    c.model.vq_codes = 32
    return common.finish(c, arg, "vqapc")
