"""melapc-2x128: APC on the zoo's log-mel backbone, made causal; melapc-3x128 with 2 layers.

Views, Z_target, p_psi, data and schedule: ``melapc_3x128.py``. 0.43 M parameters; a model of
the selection zoo (``experiments/build_selection_zoo.py``, seeds 0 and 1).
"""

from speechmi_jax.configs.zoo import common


def get_config(arg: str = ""):
    c = common.recipe("apc", "2x128", arg, "melapc_2x128", seeds=(0, 1))
    c.population.shift = [2]
    return c
