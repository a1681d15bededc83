"""melhubert-2x128: HuBERT-style masked prediction (iteration 1) on the zoo's log-mel backbone;
melhubert-3x128 with 2 layers.

Views, Z_target, p_psi, data and schedule: ``melhubert_3x128.py``. 0.43 M parameters; a model
of the selection zoo (``experiments/build_selection_zoo.py``, seeds 0 and 1).
"""

from speechmi_jax.configs.zoo import common


def get_config(arg: str = ""):
    return common.recipe("hubert", "2x128", arg, "melhubert_2x128", seeds=(0, 1))
