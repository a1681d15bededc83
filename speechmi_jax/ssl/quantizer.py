"""Gumbel-softmax vector quantizers: VQ-APC's codebook and wav2vec 2.0's product quantizer.

Both project features x [B, T, C] to logits over codes, pick a code per group and return the
chosen codevectors (Jang et al. 2017, "Categorical reparameterization with Gumbel-softmax"):

* training (``train=True``, needs the ``"gumbel"`` rng): y = softmax((logits + g) / tau) with
  g ~ Gumbel(0, 1); the forward value is the hard one-hot argmax of y, the gradient that of y
  (straight-through: hard - stop_gradient(y) + y). The temperature tau is an argument (the
  trainer anneals it).
* evaluation: the one-hot argmax of the logits, no noise.

Codebook perplexity (wav2vec 2.0, transformers' ``Wav2Vec2GumbelVectorQuantizer``): for each
group g, p_g = the average over counted frames of softmax(logits) in training (the noise-free
soft distribution) or of the hard one-hot at evaluation; perplexity = sum_g exp(H(p_g)), between
G and G * V. ``mask`` [B, T] selects the counted frames (wav2vec 2.0 counts the masked frames).

* :class:`GumbelVQ`: VQ-APC (Chung, Tang & Glass 2020, arXiv:2005.08392), one codebook of V codes
  of dimension D; returns (quantized [B, T, D], code ids [B, T] int32, perplexity).
* :class:`GumbelProductQuantizer`: wav2vec 2.0 (Baevski et al. 2020, arXiv:2006.11477), G groups
  of V codes, each of dimension codevector_dim / G, concatenated; returns (quantized
  [B, T, codevector_dim], perplexity, diversity loss (G V - perplexity) / (G V)). transformers
  multiplies the diversity loss by the number of masked frames in its summed loss; here it is
  the per-frame value, in [0, 1 - 1/V].

Parameters follow transformers' layout: ``weight_proj`` (Dense C -> G V; torch ``weight`` is
the kernel transposed) and ``codevectors`` [1, G V, codevector_dim / G]. The product quantizer is
initialised as transformers' (weight N(0, 1), bias 0, codevectors U[0, 1)). VQ-APC's codebook is
initialised as its reference implementation's (PyTorch ``nn.Linear`` defaults: weight
U(+-1/sqrt(C)), codevectors U(+-1/sqrt(V)); bias 0). The scale matters there: VQ-APC quantizes
the layer-normed top layer (unit variance), on which N(0, 1) weights give logits of standard
deviation sqrt(C) = 16 at C = 256: the Gumbel noise then changes the chosen code on about 10 %
of frames (94 % with nn.Linear's scale; 128 codes), and with them the zoo's APC recipe's
codebook collapsed to one code (dev perplexity 1.00, bound 0 bits, by step 300).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp


def code_perplexity(probs, mask=None):
    """sum_g exp(H(mean over counted frames of probs[:, g])): probs [N, G, V], mask [N] bool."""
    if mask is None:
        marginal = probs.mean(axis=0)
    else:
        m = mask.reshape(-1, 1, 1).astype(probs.dtype)
        marginal = (probs * m).sum(axis=0) / jnp.maximum(m.sum(), 1.0)
    entropy = -jnp.sum(jax.scipy.special.xlogy(marginal, marginal), axis=-1)  # [G]
    return jnp.exp(entropy).sum()


def gumbel_quantize(logits, codevectors, *, temperature, train: bool, key=None, mask=None):
    """Picks one code per group and returns its codevectors.

    Args:
      logits: [B, T, G, V] code scores.
      codevectors: [G * V, d] (group g's codes are rows g V .. (g + 1) V - 1).
      temperature: Gumbel-softmax temperature (training only).
      train: straight-through Gumbel sampling (needs ``key``) vs argmax.
      mask: [B, T] bool, frames counted in the perplexity (all when None).

    Returns:
      (quantized [B, T, G * d], ids [B, T, G] int32, perplexity scalar).
    """
    b, t, g, v = logits.shape
    logits = logits.astype(jnp.float32)
    if train:
        if key is None:
            raise ValueError("gumbel_quantize(train=True) needs a PRNG key")
        noisy = logits + jax.random.gumbel(key, logits.shape, jnp.float32)
        soft = jax.nn.softmax(noisy / temperature, axis=-1)
        ids = jnp.argmax(noisy, axis=-1)
        hard = jax.nn.one_hot(ids, v, dtype=jnp.float32)
        probs = hard - jax.lax.stop_gradient(soft) + soft
        stats = jax.nn.softmax(logits, axis=-1)
    else:
        ids = jnp.argmax(logits, axis=-1)
        probs = jax.nn.one_hot(ids, v, dtype=jnp.float32)
        stats = probs
    perplexity = code_perplexity(stats.reshape(b * t, g, v), None if mask is None else mask.reshape(-1))
    cv = codevectors.reshape(g, v, -1)
    quantized = jnp.einsum("btgv,gvd->btgd", probs, cv).reshape(b, t, -1)
    return quantized, ids.astype(jnp.int32), perplexity


class _GumbelQuantizerBase(nn.Module):
    """Shared parameters and forward; subclasses define num_groups, num_vars, codevector_dim and
    ``_inits()`` -> (weight_proj kernel init, codevectors init)."""

    def _inits(self):
        return nn.initializers.normal(1.0), nn.initializers.uniform(1.0)  # transformers'

    def _quantize(self, x, temperature, train, mask):
        g, v = self.num_groups, self.num_vars
        if self.codevector_dim % g:
            raise ValueError(f"codevector_dim={self.codevector_dim} must be divisible by num_groups={g}")
        if x.ndim != 3:
            raise ValueError(f"quantizer input: expected [B, T, C], got shape {tuple(x.shape)}")
        kernel_init, code_init = self._inits()
        codevectors = self.param("codevectors", code_init, (1, g * v, self.codevector_dim // g), jnp.float32)
        logits = nn.Dense(g * v, kernel_init=kernel_init, name="weight_proj")(x)
        logits = logits.reshape(*x.shape[:2], g, v)
        key = self.make_rng("gumbel") if train else None
        return gumbel_quantize(logits, codevectors[0], temperature=temperature, train=train, key=key,
                               mask=mask)


class GumbelVQ(_GumbelQuantizerBase):
    """VQ-APC's quantizer: one codebook of ``num_vars`` codes of dimension ``codevector_dim``.

    ``__call__(x [B, T, C], *, temperature, train, mask=None)`` ->
    (quantized [B, T, codevector_dim], ids [B, T] int32, perplexity in [1, V]).
    """

    num_vars: int
    codevector_dim: int
    num_groups = 1  # a class constant, not a field

    def _inits(self):
        # nn.Linear's U(+-1/sqrt(fan in)): fan in C for the kernel [C, V], V for the codevectors
        # [1, V, D]
        linear = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
        return linear, linear

    @nn.compact
    def __call__(self, x, *, temperature=1.0, train: bool = False, mask=None):
        quantized, ids, perplexity = self._quantize(x, temperature, train, mask)
        return quantized, ids[..., 0], perplexity


class GumbelProductQuantizer(_GumbelQuantizerBase):
    """wav2vec 2.0's product quantizer: ``num_groups`` x ``num_vars`` codes, concatenated.

    ``__call__(x [B, T, C], *, temperature, train, mask=None)`` ->
    (quantized [B, T, codevector_dim], perplexity in [G, G V], diversity loss (G V - ppl) / (G V)).
    """

    num_groups: int
    num_vars: int
    codevector_dim: int

    @nn.compact
    def __call__(self, x, *, temperature=2.0, train: bool = False, mask=None):
        quantized, _, perplexity = self._quantize(x, temperature, train, mask)
        total = self.num_groups * self.num_vars
        return quantized, perplexity, (total - perplexity) / total
