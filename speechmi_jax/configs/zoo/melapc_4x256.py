"""melapc-4x256: APC on the zoo's log-mel backbone, made causal.

Views: frames <= t -> frame t + 2 (40 ms ahead; Chung et al.'s n = 3 at 100 frames/s); Z_target:
the stacked log-mel frame; p_psi: L1 regression (Gaussian on the residual for the bound).
Backbone: 80-band log-mel, 2 frames stacked (50 frames/s), 4 causal pre-LN layers of width 256.
6000 steps of 16 x 2 s crops (53 h of audio, ~18 passes over the 3 h set): at 2000 steps its
phone-MI and PER curves were still falling (README, "Model zoo"). 9000 steps (this recipe with
``--set steps=9000``, its float32 export, ``experiments/configs/zoo_quality_bundled.py``) raised
the dev bound (5.46 -> 6.69 bits) but not what a probe reads: best-layer phone MI 2.934 bits and
PER 49.3 % on the bundled test split (6000 steps' float32 export: 2.910 / 46.7 %), 2.556 bits
and 92.9 % on the real speaker alone (2.576 / 86.1 %), PER 69.5 % there with probes trained on
the whole training split (65.8 %). Predicting 60 or 80 ms ahead instead (``--set
"population.shift=[3,4]"``, one population run) read fewer phones on the bundled test split
(phone MI 2.861 / 2.790 bits, PER 52.3 / 56.2 %) and gained nothing decided on the real speaker
(README, "Model zoo"). Multi-target APC (``--set model.past_frames=3 --set
"population.past_weight=[0.3,1.0]"``: the top layer also reconstructs the last 3 frames) kept the
dev bound and best-layer phone MI but lost linear-CTC PER on the bundled test split (59.9 / 59.6
%) and on the real speaker (71.6 / 75.0 % with probes trained on the whole split). 20 ms ahead
(``--set "population.shift=[1]"``) and VQ-APC (``--set objective=vqapc --set
model.vq_codes=128``) read fewer phones in every setting (bundled PER 48.7 / 58.0 %, real
speaker 71.3 / 70.8 % with probes trained on the whole split). A learning rate of 2e-3
(``--set "population.lr=[2e-3]"``) and the backbone's dropout at 0.1 (``--set model.dropout=0.1``)
predicted the dev split better (dev bound 6.94 / 7.76 bits against 5.46) but read no more:
bundled PER 46.2 / 57.6 %, real speaker 67.1 / 71.4 % with probes trained on the whole split.
Nor did the 6-hour pretraining set (``build_pretrain --hours 6``, ``--set corpus=...``): real
speaker 71.4 %, bundled PER 49.1 %; nor three more recorded voices at 8 kHz
(``experiments/pretrain_more_voices.py``): real speaker 68.7 %, bundled PER 50.9 %.

Half the training crops are heard through the telephone band (``telephone_prob``: 16 kHz ->
8 kHz -> 16 kHz, as the bundled corpus reads its real speaker's 8 kHz recordings); dev crops
never are. Trained on wideband crops alone, the same recipe read the real speaker's phones no
better than its own initialisation (linear-CTC PER 72.2 % against 75.6 %, probes trained on the
whole bundled training split); README, "Model zoo", has both models' numbers. Every crop through
the band (``--set telephone_prob=1.0``) read it worse than half (73.9 %).

    speechmi pretrain zoo/melapc_4x256 --out runs/zoo/melapc-4x256 \
        --set corpus=$PRETRAIN_DIR/manifest.tsv

Cost: the model card (speechmi_jax/zoo/melapc-4x256/card.md).
"""

from speechmi_jax.configs.zoo import common


def get_config(arg: str = ""):
    c = common.recipe("apc", "4x256", arg, "melapc_4x256", steps=6000)
    c.population.shift = [2]
    c.telephone_prob = 0.5  # half the crops heard through the telephone band (README, "Model zoo")
    return c
