"""melapc-3x128: APC on the zoo's log-mel backbone, made causal.

Views: frames <= t -> frame t + 2 (40 ms ahead; Chung et al.'s n = 3 at 100 frames/s); Z_target:
the stacked log-mel frame; p_psi: L1 regression (Gaussian on the residual for the bound).
Backbone: 80-band log-mel, 2 frames stacked (50 frames/s), 3 causal pre-LN layers of width 128.
Two seeds (0, 1) as a population in one vmapped step (experiments/build_selection_zoo.py
trains them one at a time); 2000 steps of 16 x 2 s crops.

    speechmi pretrain zoo/melapc_3x128 --out runs/zoo/melapc-3x128 \
        --set corpus=$PRETRAIN_DIR/manifest.tsv

Cost: the model card (speechmi_jax/zoo/melapc-3x128/card.md).
"""

from speechmi_jax.configs.zoo import common


def get_config(arg: str = ""):
    c = common.recipe("apc", "3x128", arg, "melapc_3x128", seeds=(0, 1))
    c.population.shift = [2]
    return c
