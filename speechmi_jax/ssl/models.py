"""Pretraining models and tasks: the product's encoders plus the heads each objective needs.

A *task* binds an encoder, its heads and one objective (:mod:`speechmi_jax.ssl.objectives`)
into pure functions the trainer vmaps over population members and shards over devices:

    init(key) -> (params, aux)                    aux: non-trained state (data2vec's EMA teacher)
    loss(params, aux, batch, key, hp, train) -> (loss, metrics {name: scalar})
    after_step(params, aux, hp) -> aux            e.g. the EMA update
    export(params, out_dir)                       config.json + model.safetensors

``batch``: audio [B, S] float32, lengths [B] int32 and, for cluster targets, codes [B, T] int32
at the encoder's frames. ``hp``: one member's hyperparameters, scalars that may be traced
(``lr``, ``mask_prob``, ``shift``, ``past_weight``).

Backbones: :class:`MelBackbone`, the zoo's controlled one (a transformer over stacked log-mel,
:mod:`speechmi_jax.encoders.logmel_transformer`: causal for APC, bidirectional for the masked
families, so that the families differ only in views, Z_target and p_psi), and
:class:`ConvBackbone`, the wav2vec2 family's waveform conv stem (exported in the transformers
layout, so ``transformers`` and ``smi.load_encoder`` both read it).

* :class:`APCTask`: the causal :class:`MelBackbone` -> (VQ-APC: :class:`~speechmi_jax.ssl.quantizer.GumbelVQ`
  on the last layer) -> Linear D -> stack * 80 predicting the stacked log-mel frame t + n.
* :class:`MaskedTask`: a backbone with a learned mask embedding replacing span-masked frames
  (:func:`~speechmi_jax.ssl.masking.span_mask`) -> Linear D -> K logits (HuBERT), D regression
  outputs (data2vec) or wav2vec 2.0's contrastive head.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax.encoders import logmel_transformer as lmt
from speechmi_jax.encoders import wav2vec2 as w2v
from speechmi_jax.ssl import objectives
from speechmi_jax.ssl.masking import span_mask
from speechmi_jax.ssl.quantizer import GumbelProductQuantizer, GumbelVQ
from speechmi_jax.encoders.export import save_hf

SAMPLE_RATE = 16000
# A step's dropout key is fold_in(step key, DROPOUT_STREAM): the keys the objectives drew before
# dropout existed (Gumbel noise, masks, negatives) stay as they were.
DROPOUT_STREAM = 0x0D


# ----------------------------------------------------------------------------- backbones

class _Backbone:
    """What both backbones derive the same way from their ``arch`` (width, samples per frame)."""

    @property
    def hidden_size(self) -> int:
        return self.arch.hidden_size

    @property
    def frame_hop(self) -> int:
        return self.arch.hop

    @property
    def frame_rate(self) -> float:
        return SAMPLE_RATE / self.arch.hop


@dataclasses.dataclass(frozen=True)
class MelBackbone(_Backbone):
    """The zoo's controlled backbone (:mod:`speechmi_jax.encoders.logmel_transformer`), exported
    in its own format. ``dropout``: its rate in training steps (``model.dropout``; never
    exported)."""

    arch: lmt.MelArch
    dropout: float = 0.0

    def module(self, name=None, return_inputs: bool = False, train: bool = False):
        return lmt.LogMelTransformer(self.arch, name=name, return_inputs=return_inputs,
                                     dropout=self.dropout if train else 0.0)

    @property
    def min_samples(self) -> int:
        return self.arch.hop

    @property
    def frame_offset_s(self) -> float:
        return self.arch.frame_offset_s

    def num_frames(self, lengths):
        return self.arch.num_frames(lengths)

    def export(self, params, out_dir, mask_embedding=None):
        return lmt.save(self.arch, params, out_dir, mask_embedding=mask_embedding)


@dataclasses.dataclass(frozen=True)
class ConvBackbone(_Backbone):
    """The wav2vec2-family backbone (waveform conv stem), exported in the transformers layout.

    hf_config: the transformers config as a JSON string (hashable; rebuilt for export)."""

    hf_config: str

    def transformers_config(self):
        import transformers

        return transformers.AutoConfig.for_model(**json.loads(self.hf_config))

    @property
    def arch(self) -> w2v.Arch:
        return w2v.arch_from_config(self.transformers_config())

    def module(self, name=None, train: bool = False):
        return w2v.Wav2Vec2Family(self.arch, name=name)  # no dropout (config check: model.dropout)

    @property
    def min_samples(self) -> int:
        return self.arch.receptive_field

    @property
    def frame_offset_s(self) -> float:
        return self.arch.receptive_field / 2 / SAMPLE_RATE

    def num_frames(self, lengths):
        return w2v.num_frames(self.arch, lengths)

    def export(self, params, out_dir, mask_embedding=None):
        return save_hf(self.transformers_config(), params, out_dir, mask_embedding=mask_embedding)


Backbone = Any  # MelBackbone | ConvBackbone


def real_frames(backbone: Backbone, lengths, num_samples: int):
    """[B] samples -> [B, T] bool real-frame mask of the backbone (T from the padded length)."""
    t = int(backbone.num_frames(np.asarray(num_samples)))
    return jnp.arange(t)[None, :] < backbone.num_frames(lengths.astype(jnp.int32))[:, None]


# ----------------------------------------------------------------------------- APC / VQ-APC

class APCModel(nn.Module):
    """(waveforms, lengths) -> (prediction [B, T, F], stacked log-mel [B, T, F], mask [B, T],
    perplexity, past reconstructions [B, T, M, F] or None); F = stack * 80."""

    backbone: MelBackbone  # causal
    vq_codes: int = 0  # 0: plain APC
    vq_temperature: float = 1.0
    past_frames: int = 0  # M > 0: multi-target APC's linear head for the last M frames

    @nn.compact
    def __call__(self, waveforms, lengths, train: bool = False):
        encoder = self.backbone.module("encoder", return_inputs=True, train=train)
        out, logmel = encoder(waveforms, lengths)
        h = out.hidden_states[-1]
        perplexity = jnp.float32(0.0)
        if self.vq_codes:
            h, _, perplexity = GumbelVQ(self.vq_codes, self.backbone.hidden_size, name="vq")(
                h, temperature=self.vq_temperature, train=train, mask=out.mask)
        pred = nn.Dense(self.backbone.arch.input_size, name="head")(h)
        past = None
        if self.past_frames:
            b, t, f = pred.shape
            past = nn.Dense(self.past_frames * f, name="past_head")(h).reshape(b, t, self.past_frames, f)
        return pred, logmel, out.mask, perplexity, past


@dataclasses.dataclass(frozen=True)
class APCTask:
    """APC / VQ-APC on (stacked) log-mel (objectives.apc); ``hp["shift"]`` is n, in model frames.
    With ``past_frames`` M > 0, multi-target APC: the loss adds ``hp["past_weight"]`` times the
    reconstruction of the last M frames (objectives.apc_past); the bound stays the t+n view's."""

    arch: lmt.MelArch
    vq_codes: int = 0
    vq_temperature: float = 1.0
    p_psi: str = "gaussian"
    past_frames: int = 0
    dropout: float = 0.0
    name: str = "apc"
    has_codes = False
    learned_target = False

    def __post_init__(self):
        if not self.arch.causal:
            raise ValueError("APC needs a causal backbone (model.logmel.causal is forced for apc/vqapc)")

    @property
    def collapse_metric(self):
        """VQ-APC: the codebook perplexity (one code in use: the context passes nothing on)."""
        return "perplexity" if self.vq_codes else None

    @property
    def backbone(self) -> MelBackbone:
        return MelBackbone(self.arch, self.dropout)

    @property
    def frame_hop(self) -> int:
        return self.arch.hop

    @property
    def model(self):
        return APCModel(self.backbone, self.vq_codes, self.vq_temperature, self.past_frames)

    def init(self, key):
        n = 10 * self.arch.hop
        params = self.model.init({"params": key, "gumbel": key}, jnp.zeros((1, n)),
                                 jnp.full((1,), n, jnp.int32))["params"]
        return params, {}

    def loss(self, params, aux, batch, key, hp, train: bool):
        pred, logmel, mask, ppl, past = self.model.apply(
            {"params": params}, batch["audio"], batch["lengths"], train,
            rngs={"gumbel": key, "dropout": jax.random.fold_in(key, DROPOUT_STREAM)})
        logmel = jax.lax.stop_gradient(logmel)
        m = objectives.apc(pred, logmel, mask, hp["shift"], p_psi=self.p_psi)
        if self.vq_codes:
            m["perplexity"] = ppl
        loss = m["loss"]
        if self.past_frames:
            m["past_l1"] = objectives.apc_past(past, logmel, mask)
            loss = loss + hp["past_weight"] * m["past_l1"]
        return loss, m

    def after_step(self, params, aux, hp):
        return aux

    def export(self, params, out_dir):
        return self.backbone.export(params["encoder"], out_dir)


# ----------------------------------------------------------------------------- masked families

class MaskedModel(nn.Module):
    """A backbone with span-masked input (a learned mask embedding) and a linear head.

    (waveforms [B, S], lengths [B], time_mask [B, T] bool) -> (hidden [L+1, B, T, D], mask, head [B, T, out]).
    """

    backbone: Backbone
    hidden_size: int
    out_dim: int

    @nn.compact
    def __call__(self, waveforms, lengths, time_mask, train: bool = False):
        emb = self.param("masked_spec_embed", nn.initializers.uniform(1.0), (self.hidden_size,))
        out = self.backbone.module("backbone", train=train)(waveforms, lengths, time_mask, emb)
        return out.hidden_states, out.mask, nn.Dense(self.out_dim, name="head")(out.hidden_states[-1])


class ContrastiveModel(nn.Module):
    """wav2vec 2.0: (waveforms, lengths, time_mask) -> (context [B, T, F], quantized [B, T, F],
    perplexity, diversity loss).

    The quantizer reads the *unmasked* transformer input (hidden_states[0] of a second pass of the
    same backbone, of which XLA keeps only the stem and positional conv); fairseq/transformers
    quantize the conv features before the projection, a detail the exported encoder never sees.
    """

    backbone: Backbone
    hidden_size: int
    groups: int
    codes: int
    final_dim: int
    temperature: float

    @nn.compact
    def __call__(self, waveforms, lengths, time_mask, train: bool = False):
        emb = self.param("masked_spec_embed", nn.initializers.uniform(1.0), (self.hidden_size,))
        # Dropout (training) in both passes: fairseq drops the quantizer's input features too.
        backbone = self.backbone.module("backbone", train=train)
        ctx = backbone(waveforms, lengths, time_mask, emb)
        clean = backbone(waveforms, lengths)
        q, ppl, diversity = GumbelProductQuantizer(self.groups, self.codes, self.final_dim, name="quantizer")(
            clean.hidden_states[0], temperature=self.temperature, train=train, mask=clean.mask)
        q = nn.Dense(self.final_dim, name="project_q")(q)
        return nn.Dense(self.final_dim, name="head")(ctx.hidden_states[-1]), q, ppl, diversity


@dataclasses.dataclass(frozen=True)
class MaskedTask:
    """HuBERT-style MLM (``kind="hubert"``), data2vec or wav2vec 2.0 on a backbone.

    backbone: :class:`MelBackbone` (bidirectional; the zoo's) or :class:`ConvBackbone` (the
    wav2vec2 family, exported in the transformers layout).
    num_codes, h_target_bits: HuBERT's K and the plug-in entropy of its fitted ids (only the
    reported bound reads the entropy; it reaches the step as the traced ``hp["h_target_bits"]``,
    ``trainer.hyperparameters``, so it is left out of the task's hash and equality and runs
    whose targets differ in entropy share one compiled step);
    unmasked_weight: HuBERT's weight on the unmasked frames' loss (0 = masked frames only).
    top_k, normalize_targets, ema_decay: data2vec's target (normalize_targets is its
    anti-collapse safeguard; ema_decay = 0 makes the teacher the student itself).
    """

    kind: str
    backbone: Backbone
    mask_span: int = 10
    num_codes: int = 0
    h_target_bits: float = dataclasses.field(default=0.0, compare=False)
    unmasked_weight: float = 0.0
    top_k: int = 2
    normalize_targets: bool = True
    ema_decay: float = 0.999
    num_negatives: int = 10  # wav2vec 2.0: distractors, codebook, temperatures, diversity weight
    codebook_groups: int = 2
    codebook_vars: int = 32
    final_dim: int = 32
    gumbel_temperature: float = 2.0
    logit_temperature: float = 0.1
    diversity_weight: float = 0.1
    learned_target: bool = False

    def __post_init__(self):
        if self.kind not in ("hubert", "data2vec", "wav2vec2"):
            raise ValueError(f"MaskedTask kind={self.kind!r}: expected 'hubert', 'data2vec' or 'wav2vec2'")
        if isinstance(self.backbone, MelBackbone) and self.backbone.arch.causal:
            raise ValueError(f"{self.kind}: masked prediction needs a bidirectional backbone "
                             f"(model.logmel.causal=False)")
        object.__setattr__(self, "learned_target", self.kind != "hubert")

    @property
    def collapse_metric(self):
        """The dev metric whose fall signals a collapsing learned target."""
        return {"data2vec": "target_var", "wav2vec2": "perplexity"}.get(self.kind)

    @property
    def name(self):
        return self.kind

    @property
    def has_codes(self):
        return self.kind == "hubert"

    @property
    def frame_hop(self) -> int:
        return self.backbone.frame_hop

    @property
    def model(self):
        b = self.backbone
        if self.kind == "wav2vec2":
            return ContrastiveModel(b, b.hidden_size, self.codebook_groups, self.codebook_vars,
                                    self.final_dim, self.gumbel_temperature)
        return MaskedModel(b, b.hidden_size, self.num_codes if self.kind == "hubert" else b.hidden_size)

    def init(self, key):
        n = self.backbone.min_samples
        params = self.model.init(key, jnp.zeros((1, n)), jnp.full((1,), n, jnp.int32),
                                 jnp.zeros((1, 1), bool))["params"]
        aux = {"teacher": params["backbone"]} if self.kind == "data2vec" else {}
        return params, aux

    def loss(self, params, aux, batch, key, hp, train: bool):
        audio, lengths = batch["audio"], batch["lengths"]
        real = real_frames(self.backbone, lengths, audio.shape[1])
        k_mask, k_neg, k_gumbel = jax.random.split(key, 3)
        k_drop = jax.random.fold_in(key, DROPOUT_STREAM)
        masked = span_mask(k_mask, real, hp["mask_prob"], self.mask_span)
        if self.kind == "wav2vec2":
            ctx, q, ppl, diversity = self.model.apply({"params": params}, audio, lengths, masked, train,
                                                      rngs={"gumbel": k_gumbel, "dropout": k_drop})
            negatives = objectives.sample_negatives(k_neg, masked, self.num_negatives)
            m = objectives.contrastive(ctx, q, masked, negatives, temperature=self.logit_temperature,
                                       num_groups=self.codebook_groups, perplexity=ppl)
            m["diversity"] = diversity
            m["loss"] = m["loss"] + self.diversity_weight * diversity
            return m["loss"], m
        hidden, _, head = self.model.apply({"params": params}, audio, lengths, masked, train,
                                           rngs={"dropout": k_drop})
        if self.kind == "hubert":
            m = objectives.mlm(head, batch["codes"], masked, hp["h_target_bits"], real=real,
                               unmasked_weight=self.unmasked_weight)
        else:
            teacher = self.backbone.module().apply({"params": aux["teacher"]}, audio, lengths)
            target = objectives.data2vec_targets(teacher.hidden_states, real, self.top_k,
                                                 self.normalize_targets)
            m = objectives.data2vec(head, target, masked)
        return m["loss"], m

    def after_step(self, params, aux, hp):
        if self.kind != "data2vec":
            return aux
        d = self.ema_decay
        return {"teacher": jax.tree.map(lambda t, s: d * t + (1.0 - d) * s, aux["teacher"], params["backbone"])}

    def export(self, params, out_dir):
        return self.backbone.export(params["backbone"], out_dir, mask_embedding=params["masked_spec_embed"])


Task = Any  # APCTask | MaskedTask
