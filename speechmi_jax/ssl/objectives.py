"""SSL objectives as pure JAX functions, each with its mutual-information bound.

Every objective is read through the four columns of Liu, Yeh & Glass (ICASSP 2024), Table 1 —
**views**, **Z_target**, **p_psi** and **H(Z_target)** — and bounds

    I(view_ctx; Z_target) >= H(Z_target) - E[-log p_psi(Z_target | view_ctx)]

(the cross-entropy E[-log p_psi] upper-bounds the conditional entropy H(Z_target | view_ctx)).
Each function returns a dict of scalars: ``loss`` (what the optimiser minimises) and, in bits
(:mod:`speechmi_jax.units`), ``nll_bits`` = E[-log p_psi], ``h_target_bits`` and
``bound_bits = h_target_bits - nll_bits`` (wav2vec 2.0: ``log2(K + 1) - nll_bits``), per target
frame.

Table 1's rows (views; Z_target; p_psi; H(Z_target)):

* :func:`apc` (Chung et al. 2019): frames <= t -> frame t+n; the log-mel frame; Gaussian (full
  covariance) or Laplace (diagonal) on the residual; Gaussian entropy of the target frames.
* VQ-APC (Chung, Tang, Glass 2020): the same through a Gumbel VQ in the context network; the
  codebook perplexity is logged.
* :func:`apc_past` (multi-target APC, Chung & Glass 2020): an auxiliary loss, not a view of the
  bound: the state at t also reconstructs the frames heard last.
* :func:`mlm` (HuBERT, Hsu et al. 2021): unmasked frames -> a masked frame; its k-means id;
  softmax over K codes; plug-in entropy of the fitted ids (<= log2 K).
* :func:`data2vec` (Baevski et al. 2022): masked student -> EMA teacher; the mean of the
  teacher's top-k layers (learned: can collapse); diagonal Gaussian on the residual; Gaussian
  entropy of the targets.
* :func:`contrastive` (wav2vec 2.0, Baevski et al. 2020): masked context -> quantized latent;
  a Gumbel product-quantizer code (learned); softmax over cosines with K distractors (the
  InfoNCE bound log(K + 1) - L); a perplexity proxy, kept up by a diversity loss.

Continuous targets (APC, data2vec). Their differential entropy is not known; ``h_target_bits`` is
the entropy of a Gaussian with the targets' covariance, measured on the same frames. That is the
*largest* differential entropy of any distribution with this covariance: exact when the target is
Gaussian (the closed-form test of ``synthetic``), an over-estimate otherwise, so on speech the
"bound" is an estimate, not a guaranteed lower bound. Between models with one fixed target (APC
vs VQ-APC on the same log-mel, or APC with different encoders) it is the same number and cancels:
compare ``nll_bits`` there. p_psi's scale is the maximum-likelihood fit to the residuals of the
frames being scored (a plug-in: optimistic by about D^2 / (4 N) nats for D dimensions and N
frames). Both covariances get a 1e-4 ridge: log-mel bands at the 80 dB floor make them nearly
singular.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from speechmi_jax.units import nats_to_bits

_LOG_2PI_E = math.log(2.0 * math.pi * math.e)


def _weighted_cov(x, w, ridge: float):
    """x [N, D], w [N] >= 0 -> (mean [D], covariance [D, D] + ridge I), biased (ML)."""
    n = jnp.maximum(w.sum(), 1.0)
    mean = (w[:, None] * x).sum(0) / n
    xc = (x - mean) * jnp.sqrt(w)[:, None]
    cov = jnp.einsum("nd,ne->de", xc, xc, precision=jax.lax.Precision.HIGHEST) / n
    return mean, cov + ridge * jnp.eye(x.shape[1], dtype=x.dtype)


def gaussian_entropy_nats(x, w, *, diagonal: bool = False, ridge: float = 1e-4):
    """Entropy of N(mean, Sigma) fitted to rows x [N, D] with weights w [N]: 0.5 log det(2 pi e Sigma).

    With ``diagonal`` only the variances are used (0.5 sum_d log(2 pi e var_d)). Used as H of a
    continuous target and, on residuals, as the cross-entropy of an ML-fitted Gaussian p_psi
    (for the ML fit, E[-log N(e; 0, Sigma)] = 0.5 log det(2 pi e Sigma) exactly when the residual
    mean is folded into the predictor).
    """
    _, cov = _weighted_cov(x, w, ridge)
    if diagonal:
        logdet = jnp.log(jnp.diagonal(cov)).sum()
    else:
        logdet = jnp.linalg.slogdet(cov)[1]
    return 0.5 * (x.shape[1] * _LOG_2PI_E + logdet)


def laplace_nll_nats(err, w, *, floor: float = 1e-6):
    """Cross-entropy of a diagonal Laplace p_psi(e) = prod_d exp(-|e_d| / b_d) / (2 b_d) fitted by ML
    (b_d = E|e_d|) to residuals err [N, D], weights w [N]: sum_d log(2 e b_d)."""
    n = jnp.maximum(w.sum(), 1.0)
    b = jnp.maximum((w[:, None] * jnp.abs(err)).sum(0) / n, floor)
    return jnp.sum(jnp.log(2.0 * b) + 1.0)


def _flat(x, w):
    return x.reshape(-1, x.shape[-1]), w.reshape(-1).astype(x.dtype)


def regression_bound(pred, target, weight, *, p_psi: str = "gaussian", diagonal: bool = False):
    """Bound of a continuous-target objective: (nll_nats, h_target_nats) per target frame.

    pred, target [B, T, D]; weight [B, T] (1 on the frames that count). p_psi: ``"gaussian"``
    (ML covariance of the residuals; ``diagonal`` keeps only its variances) or ``"laplace"``.
    """
    err, w = _flat(pred - target, weight)
    tgt, _ = _flat(target, weight)
    h = gaussian_entropy_nats(tgt, w, diagonal=diagonal)
    if p_psi == "gaussian":
        # The residual mean is part of the predictor: centre it as the ML fit does.
        nll = gaussian_entropy_nats(err, w, diagonal=diagonal)
    elif p_psi == "laplace":
        nll = laplace_nll_nats(err, w)
    else:
        raise ValueError(f"p_psi={p_psi!r}: expected 'gaussian' or 'laplace'")
    return nll, h


def _report(loss, nll_nats, h_nats, **extra):
    out = {"loss": loss, "nll_bits": nats_to_bits(nll_nats), "h_target_bits": nats_to_bits(h_nats),
           "bound_bits": nats_to_bits(h_nats - nll_nats)}
    out.update(extra)
    return out


def shift_targets(x, mask, shift):
    """APC's views: (target x_{t+n} [B, T, D], weight [B, T]) for predictions made at frame t.

    ``shift`` n may be a traced integer (a population vmaps over it): n >= 1 a future frame,
    n <= 0 one already heard (:func:`apc_past`). The weight is 1 where frames t and t+n are
    both real (and t+n inside the crop).
    """
    t = x.shape[1]
    idx = jnp.arange(t) + shift  # [T]
    ok = (idx >= 0) & (idx < t)
    idx = jnp.clip(idx, 0, t - 1)
    target = jnp.take(x, idx, axis=1)
    weight = mask & ok[None, :] & jnp.take(mask, idx, axis=1)
    return target, weight.astype(x.dtype)


def apc(pred, frames, mask, shift, *, p_psi: str = "gaussian"):
    """Autoregressive predictive coding (Chung, Hsu, Tang & Glass 2019, arXiv:1904.03240).

    Views: frames <= t (a causal encoder's output at t) -> frame t + n. Z_target: the input
    log-mel frame x_{t+n}. Loss: L1, mean over real (t, t+n) pairs and dimensions (the paper's).
    p_psi: Gaussian with the residuals' ML covariance (or diagonal Laplace) around the
    prediction. H(Z_target): Gaussian entropy of the targets (module docstring).

    pred [B, T, D] (made at frame t), frames [B, T, D], mask [B, T] bool, shift n (int).
    """
    target, w = shift_targets(frames, mask, shift)
    n = jnp.maximum(w.sum(), 1.0)
    loss = (jnp.abs(pred - target).mean(-1) * w).sum() / n
    nll, h = regression_bound(pred, target, w, p_psi=p_psi)
    return _report(loss, nll, h, frames=n)


def apc_past(pred_past, frames, mask):
    """Multi-target APC's auxiliary view (after Chung & Glass 2020, arXiv:2004.05274, whose
    auxiliary task reconstructs past frames from the state at t to regularise the future
    prediction): from the causal state at t, linear reconstructions of the M frames heard last,
    x_t, x_{t-1}, ..., x_{t-M+1}. Returns the L1 loss, mean over real (t, t-m) pairs, dimensions
    and the M offsets (each offset weighted alike).

    pred_past [B, T, M, D] (offset m in slot m), frames [B, T, D], mask [B, T] bool.
    """
    losses = []
    for m in range(pred_past.shape[2]):
        target, w = shift_targets(frames, mask, -m)
        n = jnp.maximum(w.sum(), 1.0)
        losses.append((jnp.abs(pred_past[:, :, m] - target).mean(-1) * w).sum() / n)
    return jnp.mean(jnp.stack(losses))


def mlm(logits, codes, masked, h_target_bits, real=None, unmasked_weight: float = 0.0):
    """HuBERT-style masked prediction of cluster ids (Hsu et al. 2021, arXiv:2106.07447).

    Views: the unmasked frames -> the id at a masked frame. Z_target: k-means ids of features
    (MFCC, then a layer of the previous iteration's model), fixed during training. p_psi: softmax
    over the K codes. H(Z_target): the plug-in entropy of the fitted ids over the training frames,
    passed in (``h_target_bits``, <= log2 K). Loss: cross-entropy at masked frames (nats), plus
    ``unmasked_weight`` times the mean cross-entropy at the unmasked real frames (the paper's
    L = alpha L_m + (1 - alpha) L_u up to scale; 0 = masked frames only, the paper's default).
    nll_bits, bound_bits and masked_acc are always of the masked frames: the Table 1 view.

    logits [B, T, K], codes [B, T] int, masked [B, T] bool (masked real frames), real [B, T] bool
    (needed when unmasked_weight > 0).
    """
    w = masked.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    ce = -jnp.take_along_axis(logp, codes[..., None].astype(jnp.int32), axis=-1)[..., 0]
    masked_loss = (ce * w).sum() / n
    loss = masked_loss
    if unmasked_weight:
        wu = (real & ~masked).astype(jnp.float32)
        loss = loss + unmasked_weight * (ce * wu).sum() / jnp.maximum(wu.sum(), 1.0)
    acc = ((jnp.argmax(logits, -1) == codes) * w).sum() / n
    h_bits = jnp.asarray(h_target_bits, jnp.float32)
    return {"loss": loss, "nll_bits": nats_to_bits(masked_loss), "h_target_bits": h_bits,
            "bound_bits": h_bits - nats_to_bits(masked_loss), "masked_acc": acc, "frames": n}


def instance_norm(x, mask, eps: float = 1e-5):
    """Per utterance and channel, over real frames: x [B, T, D], mask [B, T] -> [B, T, D]."""
    m = mask[..., None].astype(x.dtype)
    n = jnp.maximum(m.sum(1, keepdims=True), 1.0)
    mean = (x * m).sum(1, keepdims=True) / n
    var = (jnp.square(x - mean) * m).sum(1, keepdims=True) / n
    return (x - mean) * jax.lax.rsqrt(var + eps)


def data2vec_targets(teacher_hidden, mask, top_k: int, normalize: bool):
    """data2vec's regression target: the mean of the teacher's top-k hidden states [B, T, D].

    teacher_hidden [L + 1, B, T, D]; with ``normalize`` each layer is instance-normalised over
    the utterance's real frames first (data2vec's safeguard against a collapsing target).
    """
    layers = teacher_hidden[-top_k:]
    if normalize:
        layers = jax.vmap(lambda h: instance_norm(h, mask))(layers)
    return layers.mean(0)


def data2vec(pred, target, masked):
    """data2vec (Baevski et al. 2022, arXiv:2202.03555).

    Views: the masked student -> the unmasked EMA teacher. Z_target: the mean of the teacher's
    top-k layers (:func:`data2vec_targets`, learned and moving). p_psi: diagonal Gaussian on the
    residual. H(Z_target): diagonal Gaussian entropy of the targets at masked frames (module
    docstring); its proxy ``target_var`` (mean per-dimension variance) drops to 0 when the target
    collapses. Loss: mean squared error at masked frames (stop-gradient on the target).

    pred, target [B, T, D]; masked [B, T] bool.
    """
    target = jax.lax.stop_gradient(target)
    w = masked.astype(pred.dtype)
    n = jnp.maximum(w.sum(), 1.0)
    loss = (jnp.square(pred - target).mean(-1) * w).sum() / n
    nll, h = regression_bound(pred, target, w, diagonal=True)
    tgt, wf = _flat(target, w)
    mean = (wf[:, None] * tgt).sum(0) / n
    target_var = ((wf[:, None] * jnp.square(tgt - mean)).sum(0) / n).mean()
    return _report(loss, nll, h, target_var=target_var, frames=n)


def sample_negatives(key, masked, num_negatives: int):
    """wav2vec 2.0's distractors: for every frame, ``num_negatives`` positions drawn uniformly (with
    replacement) among the masked frames of the same utterance -> int32 [B, T, K]."""
    b, t = masked.shape
    n = masked.sum(1).astype(jnp.int32)  # [B]
    order = jnp.argsort(~masked, axis=1, stable=True)  # masked positions first
    u = jax.random.uniform(key, (b, t, num_negatives))
    rank = jnp.minimum((u * n[:, None, None]).astype(jnp.int32), jnp.maximum(n - 1, 0)[:, None, None])
    return jnp.take_along_axis(order, rank.reshape(b, -1), axis=1).reshape(b, t, num_negatives)


def contrastive(context, quantized, masked, negatives, *, temperature: float = 0.1, num_groups: int,
                perplexity):
    """wav2vec 2.0 (Baevski et al. 2020, arXiv:2006.11477), the contrastive part.

    Views: the masked context c_t -> the quantized latent q_t of the unmasked input at t.
    Z_target: the Gumbel product-quantizer code of frame t (learned). p_psi: softmax over
    cos(c_t, q) / temperature among q_t and K distractors q_j (``negatives`` [B, T, K], from
    :func:`sample_negatives`; a distractor at t itself or equal to q_t is excluded, as in
    fairseq). Bound: the InfoNCE form I(c; q) >= log(K + 1) - L_NCE (the contrastive p_psi's
    own bound; ``bound_bits``). H(Z_target): the code entropy is not available per frame; its
    proxy ``h_target_bits`` = G log2(perplexity / G), an upper bound on the entropy of the code
    tuple from the batch's marginal code distribution (collapse sends it to 0).

    context, quantized [B, T, D]; masked [B, T] bool; perplexity: the quantizer's (summed over G).
    """
    b, t, d = quantized.shape
    k = negatives.shape[-1]
    negs = jnp.take_along_axis(quantized, negatives.reshape(b, -1)[..., None], axis=1).reshape(b, t, k, d)
    cands = jnp.concatenate([quantized[:, :, None], negs], axis=2)  # [B, T, K + 1, D]
    unit = lambda v: v * jax.lax.rsqrt(jnp.maximum(jnp.sum(jnp.square(v), -1, keepdims=True), 1e-12))
    logits = jnp.einsum("btd,btkd->btk", unit(context), unit(cands)) / temperature
    invalid = (negatives == jnp.arange(t)[None, :, None]) | jnp.all(negs == quantized[:, :, None], axis=-1)
    logits = logits.at[..., 1:].set(jnp.where(invalid, -1e9, logits[..., 1:]))
    w = masked.astype(jnp.float32)
    n = jnp.maximum(w.sum(), 1.0)
    nce = ((jax.nn.logsumexp(logits, -1) - logits[..., 0]) * w).sum() / n
    acc = ((jnp.argmax(logits, -1) == 0) * w).sum() / n
    h_proxy = num_groups * jnp.log2(jnp.maximum(perplexity / num_groups, 1.0))
    bound = math.log2(k + 1) - nats_to_bits(nce)
    return {"loss": nce, "nll_bits": nats_to_bits(nce), "h_target_bits": h_proxy, "bound_bits": bound,
            "masked_acc": acc, "perplexity": perplexity, "frames": n}
