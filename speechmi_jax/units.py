"""Units: the one place that converts between nats and bits.

Every estimator works in nats internally (natural logs are what `jax.nn.log_softmax`
and `optax` losses give) and reports bits. Nobody else divides by log(2).
"""

from __future__ import annotations

import math

LN2 = math.log(2.0)


def nats_to_bits(x):
    """Converts nats to bits; works on Python floats, numpy and jax arrays."""
    return x / LN2


def bits_to_nats(x):
    """Converts bits to nats."""
    return x * LN2
