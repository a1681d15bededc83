"""Settings shared by every pretraining config (each objective's file overrides what it needs).

Every objective trains the log-mel transformer (``model.backbone = "logmel"``,
``encoders/logmel_transformer.py``: causal for APC / VQ-APC, bidirectional for the masked ones),
so that objectives differ only in views, Z_target and p_psi; ``model.backbone = "conv"`` trains
the masked objectives on the wav2vec2 family's waveform conv stem instead (``model.hf_config``),
exported in the transformers layout. The sizes here are small on purpose: they run in tests and
``--smoke``; the zoo's recipes (``configs/zoo/``) set theirs. Costs: README ("Pretraining").
"""

import dataclasses
import math

import ml_collections

from speechmi_jax.configs import arg as config_arg
from speechmi_jax.configs import ranges
from speechmi_jax.configs.ranges import SEED, at_least, between, count, positive

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
    # The chance that a training crop is heard through the telephone band (16 kHz -> 8 kHz ->
    # 16 kHz, as 8 kHz recordings such as the bundled corpus's real speaker are read); dev crops
    # never are. 0 = wideband only.
    c.telephone_prob = 0.0
    c.p_psi = "gaussian"
    c.mask_span = 10
    # One entry per population member; a list of length 1 is shared by all members.
    # shift: APC's n in model frames (2 at 50 frames/s = 40 ms; Chung et al.'s n = 3 at 100/s);
    # past_weight: multi-target APC's weight on reconstructing the last model.past_frames frames
    c.population = ml_collections.ConfigDict(dict(seed=[0], lr=[1e-3], mask_prob=[0.65], shift=[2],
                                                  past_weight=[0.0]))
    c.optim = ml_collections.ConfigDict(dict(
        warmup_steps=100, final_lr_fraction=0.05, b1=0.9, b2=0.98, eps=1e-6, weight_decay=0.01,
        clip_norm=10.0))
    # backbone "logmel": the zoo's transformer over stacked log-mel (encoders/logmel_transformer.py;
    # causal for apc/vqapc, bidirectional for the masked objectives), shaped by ``logmel``;
    # "conv": the wav2vec2 family's waveform conv stem, shaped by ``hf_config`` (masked only).
    # dropout: the log-mel backbone's rate in training steps (its input and each layer's attention
    # and feed-forward outputs; never exported); 0 = none.
    c.model = ml_collections.ConfigDict(dict(
        backbone="logmel", logmel=dict(LOGMEL_BACKBONE), dropout=0.0,
        vq_codes=32, vq_temperature=1.0, past_frames=0, hf_config=dict(model_type="hubert", **SMALL_BACKBONE, **HUBERT_POS)))
    # HuBERT's targets; unmasked_weight: its loss weight on the unmasked frames (0 = masked only)
    c.targets = ml_collections.ConfigDict(dict(source="mfcc", layer=0, k=50, seed=0, iters=50,
                                               max_frames=50000, unmasked_weight=0.0))
    c.data2vec = ml_collections.ConfigDict(dict(top_k=2, normalize_targets=True, ema_decay=0.995))
    c.wav2vec2 = ml_collections.ConfigDict(dict(
        num_negatives=10, codebook_groups=2, codebook_vars=32, final_dim=32, gumbel_temperature=2.0,
        logit_temperature=0.1, diversity_weight=0.1))
    # Under these a learned target or codebook counts as collapsed: data2vec's target variance
    # (normalised targets have ~1), the codebook perplexity of wav2vec 2.0 (G = 2: about one code
    # per group in use) and of VQ-APC (one codebook: fewer than 3 codes in use).
    c.collapse = ml_collections.ConfigDict(dict(min_target_var=1e-2, min_perplexity=2.5))
    return c


# Allowed values of every numeric key (:mod:`speechmi_jax.configs.ranges`; a list's items each),
# checked by ``ssl.trainer.validate_config`` before anything is written. A key added to a
# pretraining config needs its range here (tests/test_hostile.py walks every numeric key of
# every bundled pretraining config).
RANGES = {
    "max_utterances": count(0, "0 = all"),
    "max_dev_utterances": count(0, "0 = all"),
    "max_dev_batches": count(0, "0 = all"),
    # 0.1 s: 10 log-mel frames, 5 backbone frames; the front ends need > 200 samples.
    "crop_seconds": at_least(0.1, "seconds"),
    "batch_size": count(1), "steps": count(1), "eval_every": count(1),
    "checkpoint_every": count(1), "keep_checkpoints": count(1),
    "seed": SEED,
    "telephone_prob": between(0, 1),
    "mask_span": count(1, "frames"),
    "population.seed": SEED,
    "population.lr": between(0, 1, lo_open=True),
    "population.mask_prob": between(0, 1, lo_open=True),
    "population.shift": count(1, "frames"),
    "population.past_weight": at_least(0),
    "optim.warmup_steps": count(0),
    "optim.final_lr_fraction": between(0, 1),
    "optim.b1": between(0, 1, hi_open=True),
    "optim.b2": between(0, 1, hi_open=True),
    "optim.eps": positive(),
    "optim.weight_decay": at_least(0),
    "optim.clip_norm": positive(),
    "model.logmel.hidden_size": count(1), "model.logmel.num_layers": count(1),
    "model.logmel.num_heads": count(1), "model.logmel.intermediate_size": count(1),
    "model.logmel.stack": count(1, "log-mel frames"), "model.logmel.pos_conv_kernel": count(1),
    "model.logmel.pos_conv_groups": count(1),
    "export_steps": dataclasses.replace(count(1, "steps"), empty_ok=True),
    "model.vq_codes": count(2, "codes"),
    "model.vq_temperature": positive(),
    "model.past_frames": count(0, "frames (0 = off)"),
    "model.dropout": between(0, 1, hi_open=True),
    "model.hf_config.conv_dim": count(1), "model.hf_config.conv_kernel": count(1),
    "model.hf_config.conv_stride": count(1), "model.hf_config.hidden_size": count(1),
    "model.hf_config.num_hidden_layers": count(1),
    "model.hf_config.num_attention_heads": count(1),
    "model.hf_config.intermediate_size": count(1),
    "model.hf_config.num_conv_pos_embedding_groups": count(1),
    "model.hf_config.num_conv_pos_embeddings": count(1),
    "model.hf_config.conv_pos_kernel_size": count(1),
    "targets.layer": count(0),
    "targets.k": count(2, "clusters"),
    "targets.seed": SEED,
    "targets.iters": count(1),
    "targets.max_frames": count(1),
    "targets.unmasked_weight": at_least(0),
    "data2vec.top_k": count(1, "layers"),
    "data2vec.ema_decay": between(0, 1),
    "wav2vec2.num_negatives": count(1), "wav2vec2.codebook_groups": count(1),
    "wav2vec2.codebook_vars": count(2), "wav2vec2.final_dim": count(1),
    "wav2vec2.gumbel_temperature": positive(), "wav2vec2.logit_temperature": positive(),
    "wav2vec2.diversity_weight": at_least(0),
    "collapse.min_target_var": at_least(0),
    "collapse.min_perplexity": at_least(0),
}


def check_settings(config, error=ValueError, causal: bool = False) -> None:
    """Every value in its :data:`RANGES` range, then the rules that tie keys together: raises
    ``error`` naming the keys and what was expected. ``causal``: the objective trains the causal
    backbone (APC, VQ-APC: its registry row says so)."""
    ranges.check(config, RANGES, error)
    if config.checkpoint_every % config.eval_every:
        raise error(f"config keys 'checkpoint_every' and 'eval_every': checkpoint_every="
                    f"{config.checkpoint_every} must be a multiple of eval_every={config.eval_every}")
    bad = sorted(s for s in config.export_steps if s > config.steps or s % config.eval_every)
    if bad:
        raise error(f"config key 'export_steps': {bad}; expected steps in 1..{config.steps} (steps) "
                    f"that are multiples of eval_every={config.eval_every}, so a dev record exists there")
    if config.model.backbone not in ("logmel", "conv"):
        raise error(f"config key 'model.backbone': {config.model.backbone!r}; expected 'logmel' or 'conv'")
    if causal and config.model.backbone != "logmel":
        raise error(f"config key 'model.backbone': {config.model.backbone!r} with objective "
                    f"{config.objective!r}, which trains the causal log-mel backbone; expected 'logmel'")
    crop = int(round(config.crop_seconds * 16000))
    if config.model.backbone == "conv" and config.model.dropout:
        raise error(f"config keys 'model.dropout' and 'model.backbone': dropout {config.model.dropout} "
                    f"with the 'conv' backbone, which has none; expected model.dropout 0 or "
                    f"model.backbone 'logmel'")
    if config.model.backbone == "logmel":
        mel = config.model.logmel
        hop, layers, section = 160 * mel.stack, mel.num_layers, "model.logmel"
        _divisible(error, section, mel.hidden_size, mel.num_heads, "num_heads")
        _divisible(error, section, mel.hidden_size, mel.pos_conv_groups, "pos_conv_groups")
    else:
        hf = config.model.hf_config
        lengths = {k: len(hf[k]) for k in ("conv_dim", "conv_kernel", "conv_stride")}
        if len(set(lengths.values())) != 1:
            raise error(f"config keys 'model.hf_config.conv_*': lengths {lengths}; expected one per "
                        f"conv layer, the same for all three")
        hop, layers, section = math.prod(hf.conv_stride), hf.num_hidden_layers, "model.hf_config"
        _divisible(error, section, hf.hidden_size, hf.num_attention_heads, "num_attention_heads")
    frames = crop // hop
    weight = max(config.population.past_weight)
    if weight > 0 and not (causal and config.model.past_frames):
        why = "model.past_frames is 0" if causal else f"objective {config.objective!r} is not APC"
        raise error(f"config keys 'population.past_weight' and 'model.past_frames': weight {weight} "
                    f"on reconstructing past frames, but {why}; expected model.past_frames >= 1 "
                    f"with objective apc or vqapc, or past_weight 0")
    if causal:
        most = max(config.population.shift)
        if most >= frames:
            raise error(f"config keys 'population.shift' and 'crop_seconds': a {config.crop_seconds} s "
                        f"crop has {frames} frames of {hop} samples, too few to predict {most} frames "
                        f"ahead; expected shift < {frames} or a longer crop")
        return
    if config.mask_span > frames:
        raise error(f"config keys 'mask_span' and 'crop_seconds': a {config.crop_seconds} s crop has "
                    f"{frames} frames of {hop} samples, fewer than mask_span={config.mask_span}, so no "
                    f"frame would be masked; expected mask_span <= {frames} or a longer crop")
    if config.objective == "data2vec" and config.data2vec.top_k > layers:
        raise error(f"config key 'data2vec.top_k': {config.data2vec.top_k} layers; the model has "
                    f"{layers} ({section}): expected top_k <= {layers}")
    if config.objective == "hubert" and config.targets.k > config.targets.max_frames:
        raise error(f"config keys 'targets.k' and 'targets.max_frames': k-means of {config.targets.k} "
                    f"clusters on at most {config.targets.max_frames} frames; expected k <= max_frames")


def _divisible(error, section: str, width: int, heads: int, heads_key: str):
    if width % heads:
        raise error(f"config keys '{section}.hidden_size' and '{section}.{heads_key}': hidden_size="
                    f"{width} is not a multiple of {heads_key}={heads}; expected heads that divide "
                    f"the width")


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
    return smoke(c) if config_arg.is_smoke(arg, f"pretrain config {name}") else c
