"""Probe kernels: the supervised lower bound I(Y; Z) >= H(Y) - CE(q).

For any classifier q(y|z), E[-log q(Y|Z)] >= H(Y|Z), hence

    I(Y; Z) = H(Y) - H(Y|Z) >= H(Y) - CE(q),   CE(q) = E_{(z,y) ~ held out}[-log q(y|z)].

Here CE is the mean cross-entropy on the held-out (test) items and H(Y) is estimated from the same
test items' labels: by default the Miller-Madow entropy -sum_c p_c log p_c + (C_seen - 1) / 2N
(p_c the class frequencies among the test labels), optionally the plain plug-in entropy. Both terms
use the same set, so the figure is "how much of the test labels' entropy the probe removes".
A probe trained on other data never beats the Bayes posterior in expectation, so the bound is
below the truth up to sampling noise (Pimentel et al. 2020, "Information-theoretic probing").

Probes: ``linear`` (softmax regression, logits = z W + b) and ``mlp`` (one ReLU hidden layer).
Data fields: x [N, D] (per layer), y [N] int, w [N] weights (0 on padding / unlabelled).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax.estimators.bank import Problem, he_normal

PROBES = ("linear", "mlp")


def init_linear(key, in_dims, log_prior):
    """W [D, C] zeros (the convex problem needs no symmetry breaking), b [C] = log prior: the
    initial probe predicts the training label distribution."""
    d, c = in_dims
    return {"w": jnp.zeros((d, c), jnp.float32), "b": jnp.asarray(log_prior, jnp.float32)}


def linear_logits(params, x):
    """x [N, D] -> logits [N, C]."""
    return x @ params["w"] + params["b"]


def init_mlp(key, in_dims, log_prior, hidden: int):
    """He-initialised W1 [D, H]; zero W2 [H, C], b = log prior (output starts at the prior)."""
    d, c = in_dims
    return {
        "w1": he_normal(key, d, hidden),
        "b1": jnp.zeros((hidden,), jnp.float32),
        "w": jnp.zeros((hidden, c), jnp.float32),
        "b": jnp.asarray(log_prior, jnp.float32),
    }


def mlp_logits(params, x):
    """x [N, D] -> relu(x W1 + b1) W2 + b2, [N, C]."""
    return linear_logits(params, jax.nn.relu(x @ params["w1"] + params["b1"]))


def cross_entropy(logits, y):
    """Per-item -log softmax(logits)[y], nats; logits [N, C], y [N] int in [0, C)."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.take_along_axis(logp, y[:, None], axis=-1)[:, 0]


ENTROPY_ESTIMATORS = ("miller_madow", "plugin")


def entropy_from_counts(counts: np.ndarray, estimator: str = "miller_madow") -> np.ndarray:
    """Entropy in nats from class counts [..., C].

    plugin: -sum p log p with p the observed frequencies (biased low by ~(C_seen - 1) / 2N).
    miller_madow: plugin + (C_seen - 1) / (2N), C_seen the number of classes observed (Miller
    1955); removes the first-order bias, so an independent Y gives a bound centred on 0.
    """
    counts = np.asarray(counts, np.float64)
    n = counts.sum(axis=-1)
    p = counts / n[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        h = -np.where(counts > 0, p * np.log(p), 0.0).sum(axis=-1)
    if estimator == "plugin":
        return h
    if estimator == "miller_madow":
        return h + ((counts > 0).sum(axis=-1) - 1) / (2.0 * n)
    raise ValueError(f"entropy_estimator={estimator!r}: expected one of {ENTROPY_ESTIMATORS}")


def label_entropy(y: np.ndarray, num_classes: int, estimator: str = "miller_madow") -> float:
    """Entropy estimate in nats of integer labels y [N] in [0, num_classes)."""
    return float(entropy_from_counts(np.bincount(y, minlength=num_classes), estimator))


def log_prior(y: np.ndarray, num_classes: int) -> tuple[float, ...]:
    """Log class frequencies of the training labels (classes never seen get log(1e-8))."""
    p = np.bincount(y, minlength=num_classes) / max(y.size, 1)
    return tuple(float(v) for v in np.log(np.maximum(p, 1e-8)))


@functools.lru_cache(maxsize=None)
def probe_problem(kind: str, prior: tuple[float, ...], hidden: int = 256) -> Problem:
    """The bank Problem of a `kind` probe; prior: log class frequencies [C] of the training labels
    (the initial prediction). One Problem per configuration (cached)."""
    if kind == "linear":
        init, logits_fn = functools.partial(init_linear, log_prior=prior), linear_logits
    elif kind == "mlp":
        init, logits_fn = functools.partial(init_mlp, log_prior=prior, hidden=hidden), mlp_logits
    else:
        raise ValueError(f"probe={kind!r}: expected one of {PROBES}")

    def loss(params, batch):
        ce = cross_entropy(logits_fn(params, batch["x"]), batch["y"])
        return jnp.sum(ce * batch["w"]) / jnp.sum(batch["w"])

    def evaluate(params, data):
        logits = logits_fn(params, data["x"])
        return {
            "loss": cross_entropy(logits, data["y"]),
            "correct": (jnp.argmax(logits, axis=-1) == data["y"]).astype(jnp.float32),
        }

    return Problem(
        name=f"probe_{kind}",
        init=init,
        loss=loss,
        evaluate=evaluate,
        layer_fields=("x",),
        config=(kind, prior, hidden if kind == "mlp" else None),
    )
