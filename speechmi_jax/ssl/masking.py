"""Span masking of encoder inputs, wav2vec 2.0 / HuBERT style (Baevski et al. 2020, Hsu et al. 2021).

For an utterance of L real frames, n = floor(mask_prob * L / span + u) span starts (u ~ U[0, 1)
per utterance: stochastic rounding, so E[n] = mask_prob * L / span), at least 1 when L >= span and
at most the L - span + 1 possible starts, are drawn without replacement among positions
0 .. L - span; every start masks ``span`` frames. Spans may overlap (as in fairseq and
transformers), so the masked fraction is below ``mask_prob`` (about 0.49 for 0.65 and span 10).
Every span lies inside the real frames: padding is never masked. An utterance shorter than
``span`` frames gets no mask.

Exact expectation, for tests: with M = L - span + 1 starts and n of them drawn, frame t is left
unmasked iff none of the w_t starts whose span covers it is drawn, which has probability
C(M - w_t, n) / C(M, n).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def span_mask(key, mask, mask_prob: float, span: int):
    """Span mask over real frames: mask [B, T] bool (True = real) -> masked [B, T] bool.

    ``mask`` must be True on a prefix of each row (the real frames) and False after it.
    Jittable; ``mask_prob`` may be a traced scalar (a population can vmap over it), ``span`` is a
    static Python int. See the module docstring for the sampling rule.
    """
    if span < 1:
        raise ValueError(f"span={span}: expected >= 1 frames")
    mask = jnp.asarray(mask, bool)
    if mask.ndim != 2:
        raise ValueError(f"mask: expected [B, T] bool, got shape {tuple(mask.shape)}")
    b, t = mask.shape
    lengths = mask.sum(axis=1).astype(jnp.int32)  # [B]
    starts_possible = jnp.maximum(lengths - span + 1, 0)  # [B] = M
    k_round, k_order = jax.random.split(key)
    u = jax.random.uniform(k_round, (b,))
    n = jnp.floor(mask_prob * lengths / span + u).astype(jnp.int32)
    n = jnp.clip(n, jnp.minimum(starts_possible, 1), starts_possible)  # [B]
    # n starts without replacement among 0 .. M-1: the n smallest of iid uniform scores.
    pos = jnp.arange(t)[None, :]
    scores = jnp.where(pos < starts_possible[:, None], jax.random.uniform(k_order, (b, t)), 2.0)
    rank = jnp.argsort(jnp.argsort(scores, axis=1), axis=1)  # [B, T] rank of each position
    starts = (rank < n[:, None]).astype(jnp.int32)  # [B, T]
    # frame i is masked iff a start lies in (i - span, i]
    c = jnp.cumsum(starts, axis=1)
    c_before = jnp.pad(c, ((0, 0), (span, 0)))[:, :t]
    return ((c - c_before) > 0) & mask
