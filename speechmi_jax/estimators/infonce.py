"""InfoNCE kernels: the label-free lower bound I(A; B) >= log K - L_NCE.

For K pairs (a_i, b_i) drawn from p(a, b) and a critic s(a, b), each query a_i scores all K
candidates b_1..b_K (its own partner and the K - 1 other items of the block as negatives):

    L_NCE = E[ -log( exp s(a_i, b_i) / sum_j exp s(a_i, b_j) ) ],   I(A; B) >= log K - L_NCE

(van den Oord et al. 2018; Poole et al. 2019, "On variational bounds of MI"). The bound can never
exceed log K, its ceiling. Training uses random blocks of K training pairs; the reported figure is
log K - mean per-query loss over held-out pairs cut into fixed blocks of K.

Critics (each a function of one estimator's params; all take a [K, Da], b [K, Db] -> scores [K, K]):

* ``separable`` (default): s = f(a)^T g(b) * exp(t), f and g one-hidden-layer MLP projections,
  t a learned log inverse temperature. Small MLPs can express the quadratic terms of a Gaussian
  log-density ratio, which a bilinear form cannot.
* ``concat``: s = MLP([a; b]) with one ReLU hidden layer (K^2 hidden activations per block).
* ``bilinear``: s = a^T W b.

Data fields: a [N, Da], b [N, Db] (b may be shared by all layers), w [N].
"""

from __future__ import annotations

import dataclasses
import functools
import math

import jax
import jax.numpy as jnp

from speechmi_jax.estimators.bank import Problem, he_normal

CRITICS = ("separable", "concat", "bilinear")


def _dense(key, d_in, d_out):
    """He-initialised [d_in, d_out] weight and zero bias."""
    return he_normal(key, d_in, d_out), jnp.zeros((d_out,), jnp.float32)


def _mlp_init(key, d_in, hidden, d_out):
    k1, k2 = jax.random.split(key)
    w1, b1 = _dense(k1, d_in, hidden)
    w2, b2 = _dense(k2, hidden, d_out)
    return {"w1": w1, "b1": b1, "w2": w2 * jnp.sqrt(0.5), "b2": b2}


def _mlp(p, x):
    return jax.nn.relu(x @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]


def init_critic(key, in_dims, kind: str, hidden: int, embed: int):
    """Random hidden layers, zero output layer: every critic starts with all scores equal, i.e.
    at the trivial bound log K - L_NCE = 0 exactly, and its first gradient is non-zero. That
    initial critic is no dev candidate (`Problem.step0_candidate`): a reported bound always comes
    from a trained critic, so "no information" reads as a trained critic scoring ~0 on held-out
    pairs, never as an untrained one scoring 0 by construction."""
    da, db = in_dims
    ka, kb = jax.random.split(key)
    if kind == "separable":
        g = _mlp_init(kb, db, hidden, embed)
        return {"f": _mlp_init(ka, da, hidden, embed), "g": {**g, "w2": jnp.zeros_like(g["w2"])},
                "log_scale": jnp.asarray(-0.5 * math.log(embed), jnp.float32)}
    if kind == "concat":
        wa, b1 = _dense(ka, da + db, hidden)
        return {"wa": wa[:da], "wb": wa[da:], "b1": b1, "w2": jnp.zeros((hidden, 1), jnp.float32),
                "b2": jnp.zeros((1,), jnp.float32)}
    if kind == "bilinear":
        return {"w": jnp.zeros((da, db), jnp.float32)}
    raise ValueError(f"critic={kind!r}: expected one of {CRITICS}")


def critic_scores(params, a, b, kind: str):
    """Scores [K, K], entry (i, j) = s(a_i, b_j); a [K, Da], b [K, Db]."""
    if kind == "separable":
        return (_mlp(params["f"], a) @ _mlp(params["g"], b).T) * jnp.exp(params["log_scale"])
    if kind == "concat":
        h = jax.nn.relu((a @ params["wa"])[:, None, :] + (b @ params["wb"])[None, :, :] + params["b1"])
        return (h @ params["w2"])[..., 0] + params["b2"][0]
    if kind == "bilinear":
        return (a @ params["w"]) @ b.T
    raise ValueError(f"critic={kind!r}: expected one of {CRITICS}")


def nce_losses(scores):
    """Per-query InfoNCE loss -log softmax(scores[i])[i], nats; scores [K, K] -> [K]."""
    return -jnp.diagonal(jax.nn.log_softmax(scores, axis=-1))


@functools.lru_cache(maxsize=None)
def infonce_problem(kind: str, k: int, hidden: int = 256, embed: int = 64) -> Problem:
    """The bank Problem of an InfoNCE critic with K candidates per query."""
    if kind not in CRITICS:
        raise ValueError(f"critic={kind!r}: expected one of {CRITICS}")

    def loss(params, batch):  # batch: one block of K training pairs
        return jnp.mean(nce_losses(critic_scores(params, batch["a"], batch["b"], kind)))

    def evaluate(params, data):  # data: N = n_blocks * K held-out pairs, block after block
        a = data["a"].reshape(-1, k, data["a"].shape[-1])
        b = data["b"].reshape(-1, k, data["b"].shape[-1])
        per_block = jax.vmap(lambda x, y: nce_losses(critic_scores(params, x, y, kind)))
        return {"loss": per_block(a, b).reshape(-1)}

    return Problem(
        name=f"infonce_{kind}",
        init=functools.partial(init_critic, kind=kind, hidden=hidden, embed=embed),
        loss=loss,
        evaluate=evaluate,
        layer_fields=("a", "b"),
        config=(kind, k, hidden, embed),
        step0_candidate=False,
    )


def infonce_problem_shared_b(kind: str, k: int, hidden: int = 256, embed: int = 64) -> Problem:
    """As `infonce_problem`, with b [N, Db] shared by all layers (e.g. the input features)."""
    base = infonce_problem(kind, k, hidden, embed)
    return _shared_b(base)


@functools.lru_cache(maxsize=None)
def _shared_b(base: Problem) -> Problem:
    return dataclasses.replace(base, name=base.name + "_shared_b", layer_fields=("a",))
