"""APC (Chung, Hsu, Tang & Glass 2019): a causal transformer over stacked log-mel (50 frames/s)
predicts frame t + 2 (40 ms ahead).

    speechmi pretrain apc --out runs/apc              # bundled corpus, 2000 steps
    speechmi pretrain apc --smoke --out runs/apc-smoke

Logs the L1 loss and the bound H(Z_target) - E[-log p_psi] with a Gaussian p_psi (see
speechmi_jax/ssl/objectives.py for how the differential H(Z_target) is handled). Cost: README,
"Pretraining".
"""

from speechmi_jax.configs.pretrain import common


def get_config(arg: str = ""):
    c = common.base_config()
    c.objective = "apc"
    c.population.shift = [2]
    return common.finish(c, arg, "apc")
