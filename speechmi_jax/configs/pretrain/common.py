"""Settings shared by every pretraining config (each objective's file overrides what it needs).

Every objective trains the log-mel transformer (``model.backbone = "logmel"``,
``encoders/logmel_transformer.py``: causal for APC / VQ-APC, bidirectional for the masked ones),
so that objectives differ only in views, Z_target and p_psi; ``model.backbone = "conv"`` trains
the masked objectives on the wav2vec2 family's waveform conv stem instead (``model.hf_config``),
exported in the transformers layout. The sizes here are small on purpose: they run in tests and
``--smoke``; the zoo's recipes (``configs/zoo/``) set theirs. Costs: README ("Pretraining").
"""

import ml_collections

# The conv backbone (model.backbone = "conv"): a HuBERT / data2vec-audio of ~0.1 M parameters: a 3-layer conv stem of 32 channels
# with the standard 320x downsampling (50 frames/s; kernels 10, 8, 4, strides 5, 8, 8: fewer
# layers than the 7 of the base models compile ~2x faster), 2 post-LN transformer layers of
# width 64.
SMALL_BACKBONE = dict(
    conv_dim=(32,) * 3, conv_kernel=(10, 8, 4), conv_stride=(5, 8, 8), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=128, num_conv_pos_embedding_groups=4,
)
# The log-mel transformer's shape for the smallest runs (tests, --smoke): 2 frames stacked
# (50 frames/s, MelHuBERT's rate), 2 pre-LN layers of width 64. The zoo's sizes: configs/zoo/.
LOGMEL_BACKBONE = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, stack=2,
                       pos_conv_kernel=8, pos_conv_groups=4)
# Positional convs: HuBERT's one weight-normed conv of kernel 16; data2vec-audio's stack of 2
# convs of kernel 5.
HUBERT_POS = dict(num_conv_pos_embeddings=16)
DATA2VEC_POS = dict(num_conv_pos_embeddings=2, conv_pos_kernel_size=5)


def base_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.objective = ""
    c.corpus = "bundled"
    c.train_split = "train"
    c.dev_split = "dev"
    c.max_utterances = 0  # 0 = every utterance of the split
    c.max_dev_utterances = 0
    c.max_dev_batches = 4
    c.crop_seconds = 1.0
    c.batch_size = 8
    c.steps = 2000
    c.eval_every = 100
    c.checkpoint_every = 500
    c.keep_checkpoints = 2
    # Steps at which the encoder is also exported (models/step<N>/, e.g. log-spaced for the zoo's
    # checkpoints along training); each a multiple of eval_every, so a dev record exists there.
    c.export_steps = []
    c.seed = 0  # data order
    c.p_psi = "gaussian"
    c.mask_span = 10
    # One entry per population member; a list of length 1 is shared by all members.
    # shift: APC's n in model frames (2 at 50 frames/s = 40 ms; Chung et al.'s n = 3 at 100/s)
    c.population = ml_collections.ConfigDict(dict(seed=[0], lr=[1e-3], mask_prob=[0.65], shift=[2]))
    c.optim = ml_collections.ConfigDict(dict(
        warmup_steps=100, final_lr_fraction=0.05, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
        clip_norm=10.0))
    # backbone "logmel": the zoo's transformer over stacked log-mel (encoders/logmel_transformer.py;
    # causal for apc/vqapc, bidirectional for the masked objectives), shaped by ``logmel``;
    # "conv": the wav2vec2 family's waveform conv stem, shaped by ``hf_config`` (masked only).
    c.model = ml_collections.ConfigDict(dict(
        backbone="logmel", logmel=dict(LOGMEL_BACKBONE),
        vq_codes=32, vq_temperature=1.0, hf_config=dict(model_type="hubert", **SMALL_BACKBONE, **HUBERT_POS)))
    c.targets = ml_collections.ConfigDict(dict(source="mfcc", layer=0, k=50, seed=0, iters=50,
                                               max_frames=50000))
    c.data2vec = ml_collections.ConfigDict(dict(top_k=2, normalize_targets=True, ema_decay=0.995))
    c.wav2vec2 = ml_collections.ConfigDict(dict(
        num_negatives=10, codebook_groups=2, codebook_vars=32, final_dim=32, gumbel_temperature=2.0,
        logit_temperature=0.1, diversity_weight=0.1))
    # Under these a learned target counts as collapsed: data2vec's target variance (normalised
    # targets have ~1), wav2vec 2.0's codebook perplexity (G = 2: one code per group in use).
    c.collapse = ml_collections.ConfigDict(dict(min_target_var=1e-2, min_perplexity=2.5))
    return c


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The ``--smoke`` settings: a few steps on a few utterances, every path exercised."""
    c.max_utterances = 16
    c.max_dev_utterances = 8
    c.batch_size = min(c.batch_size, 8)
    c.max_dev_batches = 1
    c.steps = 4
    c.eval_every = 2
    c.checkpoint_every = 2
    c.optim.warmup_steps = 2
    c.export_steps = [c.eval_every, c.steps] if c.export_steps else []
    c.targets.iters = 5
    return c


def finish(c, arg: str, name: str):
    if arg == "smoke":
        return smoke(c)
    if arg:
        raise ValueError(f"pretrain config {name}: unknown argument {arg!r}; expected '' or 'smoke'")
    return c
