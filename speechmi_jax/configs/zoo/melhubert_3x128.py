"""melhubert-3x128: HuBERT-style masked prediction (iteration 1) on the zoo's log-mel backbone.

Views: unmasked frames -> a masked frame (spans of 10 frames = 200 ms, mask_prob 0.65);
Z_target: k-means (K = 100) ids of MFCC + deltas fitted on the pretraining set; p_psi: softmax
over the ids. Backbone: 80-band log-mel, 2 frames stacked (50 frames/s), 3 bidirectional pre-LN
layers of width 128 (0.7 M parameters). Two seeds (0, 1) as a population in one vmapped step (experiments/build_selection_zoo.py
trains them one at a time); 2000 steps of 16 x 2 s crops (18 h of audio, ~6 passes
over the 3 h set).

    speechmi pretrain zoo/melhubert_3x128 --out runs/zoo/melhubert-3x128 \
        --set corpus=$PRETRAIN_DIR/manifest.tsv

Cost: the model card (speechmi_jax/zoo/melhubert-3x128/card.md).
"""

from speechmi_jax.configs.zoo import common


def get_config(arg: str = ""):
    return common.recipe("hubert", "3x128", arg, "melhubert_3x128", seeds=(0, 1))
