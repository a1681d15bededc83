"""What every zoo recipe shares: the pretraining set, the log-mel backbone's geometry, the
schedule of checkpoints along training.

The data is the offline pretraining set built by
``python -m speechmi_jax.data.build_pretrain --out DIR --hours 3 --seed 0`` (README,
"Pretraining data"); a recipe reads ``$SPEECHMI_PRETRAIN_DIR/manifest.tsv`` (default
``~/speechmi-pretrain``) or ``--set corpus=...``. Costs are in each recipe's docstring and in
the model cards.
"""

import os

from speechmi_jax.configs.pretrain import common

PRETRAIN_DIR = os.environ.get("SPEECHMI_PRETRAIN_DIR", os.path.expanduser("~/speechmi-pretrain"))
SIZES = {  # name -> the log-mel transformer's shape (50 frames/s, pre-LN, FF = 4 D)
    "2x128": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
    "3x128": dict(hidden_size=128, num_layers=3, num_heads=2, intermediate_size=512),
    "4x256": dict(hidden_size=256, num_layers=4, num_heads=4, intermediate_size=1024),
}
STEPS = 2000
# log-spaced checkpoints along training (+ step 0), those up to the recipe's steps
EXPORT_STEPS = [100, 300, 1000, 2000, 3000, 4000, 6000]


def recipe(objective: str, size: str, arg: str, name: str, seeds=(0,), steps: int = STEPS):
    """A zoo recipe: ``objective`` on the ``size`` backbone, 2 s crops x 16, ``steps`` steps."""
    c = common.base_config()
    c.objective = objective
    c.corpus = os.path.join(PRETRAIN_DIR, "manifest.tsv")
    c.model.backbone = "logmel"
    c.model.logmel = dict(SIZES[size], stack=2, pos_conv_kernel=16, pos_conv_groups=16)
    c.crop_seconds = 2.0
    c.batch_size = 16
    c.steps = steps
    c.eval_every = 100
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    c.export_steps = [s for s in EXPORT_STEPS if s <= steps]
    c.max_dev_batches = 4
    c.optim.warmup_steps = 300
    c.population.seed = list(seeds)
    c.population.lr = [1e-3]
    c.targets.k = 100
    return common.finish(c, arg, name)
