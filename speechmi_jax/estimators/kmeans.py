"""k-means in JAX: k-means++ seeding, Lloyd iterations, chunked assignment; plug-in code entropy.

HuBERT-style targets (Hsu et al. 2021) are k-means ids of frame features (MFCC, then a layer of
the previous iteration's model): N is millions of frames, k a few hundred. The [N, k] distance
matrix never exists: points are processed in chunks of ``chunk`` rows (a [chunk, k] block at a
time) inside one jitted ``lax.scan``, so memory is O(N D + chunk k) and the whole fit (seeding and
every Lloyd iteration) is a single compiled program that runs on CPU, GPU or TPU.

Written in JAX rather than taken from scikit-learn: scikit-learn is not a dependency of the
package, its KMeans is CPU-only, and this stays one jitted program on the product's devices.

* :func:`kmeans_fit`: k-means++ seeding (Arthur & Vassilvitskii 2007: each next centre drawn
  with probability proportional to the squared distance to the nearest centre so far, the
  "greedy" variant with ``2 + log k`` candidates per step as in scikit-learn) on a random
  subsample of at most ``init_sample`` points, then Lloyd iterations on all points until the
  relative decrease of the inertia falls under ``tol`` or ``iters`` is reached. A cluster that
  loses all its points moves to the point farthest from its centre (one candidate per chunk,
  farthest first; as scikit-learn relocates empty clusters).
* :func:`kmeans_assign`: nearest centre of each point, int32.
* :func:`plugin_entropy_bits`: plug-in entropy of the ids, bits (the estimator of
  ``probe.entropy_from_counts``; bits through ``units``).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from speechmi_jax.estimators.probe import entropy_from_counts
from speechmi_jax.units import nats_to_bits

DEFAULT_CHUNK = 16384


def _check_points(x, name: str = "x") -> None:
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected points [N, D] with N, D >= 1, got shape {tuple(x.shape)}")


def _chunked(x, chunk: int):
    """x [N, D] -> (x [C, chunk, D] zero-padded, weight [C, chunk] 1 on real rows)."""
    n, d = x.shape
    chunk = max(1, min(chunk, n))
    c = -(-n // chunk)
    pad = c * chunk - n
    xs = jnp.pad(x, ((0, pad), (0, 0))).reshape(c, chunk, d)
    w = (jnp.arange(c * chunk) < n).astype(x.dtype).reshape(c, chunk)
    return xs, w


def _sq_dists(x, centroids):
    """x [n, D], centroids [k, D] -> squared distances [n, k] (>= 0)."""
    xx = jnp.sum(x * x, axis=1, keepdims=True)
    cc = jnp.sum(centroids * centroids, axis=1)
    xc = jnp.dot(x, centroids.T, precision=lax.Precision.HIGHEST)
    return jnp.maximum(xx - 2.0 * xc + cc[None, :], 0.0)


def _assign_chunks(xs, centroids):
    """xs [C, chunk, D] -> (ids [C, chunk] int32, squared distance to the nearest [C, chunk])."""
    def one(_, xc):
        d2 = _sq_dists(xc, centroids)
        ids = jnp.argmin(d2, axis=1).astype(jnp.int32)
        return None, (ids, jnp.take_along_axis(d2, ids[:, None], axis=1)[:, 0])
    _, (ids, d2) = lax.scan(one, None, xs)
    return ids, d2


@functools.partial(jax.jit, static_argnames=("chunk",))
def _assign(x, centroids, chunk: int):
    xs, _ = _chunked(x, chunk)
    ids, _ = _assign_chunks(xs, centroids)
    return ids.reshape(-1)[: x.shape[0]]


def kmeans_assign(x, centroids, *, chunk: int = DEFAULT_CHUNK) -> jax.Array:
    """Nearest centre of every point: x [N, D], centroids [k, D] -> ids [N] int32.

    Works in chunks of ``chunk`` points (memory O(chunk * k) for the distances). N is padded to
    a power of two (below ``chunk``) or a multiple of ``chunk``, so per-utterance calls reuse a
    few compiled shapes.
    """
    x = np.asarray(x, np.float32)
    centroids = jnp.asarray(centroids, jnp.float32)
    _check_points(x)
    if centroids.ndim != 2 or centroids.shape[1] != x.shape[1]:
        raise ValueError(f"centroids: expected [k, {x.shape[1]}] (x is {tuple(x.shape)}), got "
                         f"{tuple(centroids.shape)}")
    # Pad N to a bucket so calls with many different N (one utterance at a time) compile only
    # O(log N) shapes: powers of two up to one chunk, whole chunks above. Padding and the final
    # cut are numpy: as eager jax ops they would compile once per distinct N.
    n = x.shape[0]
    size = max(256, 1 << (n - 1).bit_length()) if n < chunk else -(-n // chunk) * chunk
    return jnp.asarray(np.asarray(_assign(np.pad(x, ((0, size - n), (0, 0))), centroids, chunk))[:n])


def _kmeans_pp(key, x, k: int, candidates: int):
    """Greedy k-means++ seeding on x [n, D] -> centroids [k, D]."""
    n = x.shape[0]
    key, first = jax.random.split(key)
    c0 = x[jax.random.randint(first, (), 0, n)]
    centroids = jnp.zeros((k, x.shape[1]), x.dtype).at[0].set(c0)
    closest = jnp.sum((x - c0) ** 2, axis=1)  # [n] squared distance to the nearest centre

    def step(i, carry):
        centroids, closest, key = carry
        key, sub = jax.random.split(key)
        # D^2 sampling of `candidates` points; keep the one that lowers the potential most.
        logits = jnp.log(jnp.maximum(closest, 1e-30))
        logits = jnp.where(closest > 0, logits, -jnp.inf)
        logits = jnp.where(jnp.all(closest <= 0), 0.0, logits)  # all points covered: uniform
        cand = jax.random.categorical(sub, logits, shape=(candidates,))  # [m]
        d2 = _sq_dists(x, x[cand])  # [n, m]
        new_closest = jnp.minimum(closest[:, None], d2)  # [n, m]
        best = jnp.argmin(new_closest.sum(axis=0))
        return centroids.at[i].set(x[cand[best]]), new_closest[:, best], key

    centroids, _, _ = lax.fori_loop(1, k, step, (centroids, closest, key))
    return centroids


@functools.partial(jax.jit, static_argnames=("k", "init_sample"))
def _seed(key, x, k: int, init_sample: int):
    n = x.shape[0]
    key_sub, key_pp = jax.random.split(key)
    sub = x if init_sample >= n else x[jax.random.choice(key_sub, n, (init_sample,), replace=False)]
    return _kmeans_pp(key_pp, sub, k, 2 + int(math.log(k)))


@functools.partial(jax.jit, static_argnames=("iters", "chunk"))
def _lloyd(x, centroids, iters: int, tol, chunk: int):
    k = centroids.shape[0]
    xs, w = _chunked(x, chunk)

    def lloyd(carry):
        # carry: (centres, inertia of the previous centres, the one before, iteration)
        centroids, last, _, it = carry

        def accumulate(acc, chunk_w):
            xc, wc = chunk_w
            d2 = _sq_dists(xc, centroids)
            ids = jnp.argmin(d2, axis=1)
            onehot = jax.nn.one_hot(ids, k, dtype=xc.dtype) * wc[:, None]  # [chunk, k]
            nearest = jnp.min(d2, axis=1) * wc  # [chunk]
            far = jnp.argmax(nearest)
            sums, counts, inertia = acc
            sums = sums + jnp.dot(onehot.T, xc, precision=lax.Precision.HIGHEST)
            acc = (sums, counts + onehot.sum(axis=0), inertia + jnp.sum(nearest))
            return acc, (xc[far], nearest[far])  # this chunk's worst-served point

        init = (jnp.zeros_like(centroids), jnp.zeros((k,), x.dtype), jnp.zeros((), x.dtype))
        (sums, counts, inertia), (far_x, far_d) = lax.scan(accumulate, init, (xs, w))
        new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], centroids)
        # Empty clusters move to the worst-served points (one per chunk, farthest first).
        order = jnp.argsort(-far_d)
        empty = counts == 0
        rank = jnp.clip(jnp.cumsum(empty) - 1, 0, far_d.shape[0] - 1)
        pick = order[rank]  # [k]
        relocate = empty & (jnp.cumsum(empty) <= far_d.shape[0]) & (far_d[pick] > 0)
        new = jnp.where(relocate[:, None], far_x[pick], new)
        return new, inertia, last, it + 1

    def cond(carry):
        _, inertia, prev, it = carry
        improving = (prev - inertia) > tol * jnp.maximum(inertia, 1e-30)
        return (it < iters) & ((it < 2) | improving)

    carry = (centroids, jnp.asarray(jnp.inf, x.dtype), jnp.asarray(jnp.inf, x.dtype), 0)
    centroids, inertia, _, it = lax.while_loop(cond, lloyd, carry)
    return centroids, inertia, it


def kmeans_fit(x, k: int, *, iters: int = 100, seed: int = 0, tol: float = 1e-4,
               chunk: int = DEFAULT_CHUNK, init_sample: int = 100_000, init=None,
               return_info: bool = False):
    """k-means centres of x [N, D] -> centroids [k, D] float32.

    Args:
      x: points [N, D] (numpy or jax), N >= k.
      k: number of clusters.
      iters: maximum number of Lloyd iterations.
      seed: seeds the subsample and k-means++.
      tol: stop once an iteration lowers the inertia (sum of squared distances to the nearest
        centre) by less than ``tol`` times the inertia.
      chunk: points per assignment block (memory O(chunk * k)).
      init_sample: k-means++ runs on a random subsample of at most this many points
        (its cost is O(k * init_sample * D * log k)).
      init: starting centres [k, D] instead of k-means++ (e.g. the previous fit's).
      return_info: also return ``{"inertia": float, "iterations": int}``, the inertia being that
        of the centres before the last update.
    """
    x = jnp.asarray(x, jnp.float32)
    _check_points(x)
    if not 1 <= k <= x.shape[0]:
        raise ValueError(f"k={k}: expected 1 <= k <= N = {x.shape[0]} points")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError(f"x: {int(jnp.sum(~jnp.isfinite(x)))} non-finite values in points {tuple(x.shape)}")
    if init is None:
        init = _seed(jax.random.PRNGKey(seed), x, int(k), int(max(init_sample, k)))
    init = jnp.asarray(init, jnp.float32)
    if init.shape != (k, x.shape[1]):
        raise ValueError(f"init: expected centres [k={k}, D={x.shape[1]}], got {tuple(init.shape)}")
    centroids, inertia, it = _lloyd(x, init, int(iters), jnp.float32(tol), int(chunk))
    if return_info:
        return centroids, {"inertia": float(inertia), "iterations": int(it)}
    return centroids


def plugin_entropy_bits(ids, k: int) -> float:
    """Plug-in entropy -sum p log2 p of code ids [N] in [0, k), p the observed frequencies; bits."""
    ids = np.asarray(ids).reshape(-1)
    if ids.size == 0:
        raise ValueError("ids: empty")
    if ids.min() < 0 or ids.max() >= k:
        raise ValueError(f"ids: values must lie in [0, {k}), got range [{ids.min()}, {ids.max()}]")
    return float(nats_to_bits(entropy_from_counts(np.bincount(ids, minlength=k), "plugin")))
