"""speechmi_jax: layer-wise mutual information of self-supervised speech encoders in JAX.

Public API (see README):

    enc = load_encoder(name_or_path)            # Encoder; enc(waveforms, lengths).hidden_states
    available_encoders()                        # every built-in name, the model zoo's included
    corpus = load_corpus("bundled")             # Corpus; corpus.split("train")
    est = probe_mi(z_train, y_train, z_test, y_test)     # supervised bound, bits
    est = infonce_mi(a_train, b_train, a_test, b_test)   # label-free bound, bits
    est = estimate_mi(x_train, y_train, x_test, y_test)  # generic MI estimate, bits
    rankme(z); alpha_req(z); lidar(views); pwcca(a, b)  # rank-based label-free statistics

Names resolve lazily so that ``import speechmi_jax`` stays cheap.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "load_encoder": "speechmi_jax.encoders.registry",
    "available_encoders": "speechmi_jax.encoders.registry",
    "Encoder": "speechmi_jax.encoders.base",
    "EncoderOutput": "speechmi_jax.encoders.base",
    "load_corpus": "speechmi_jax.data.corpus",
    "probe_mi": "speechmi_jax.estimators.api",
    "infonce_mi": "speechmi_jax.estimators.api",
    "estimate_mi": "speechmi_jax.estimators.generic",
    "MIEstimate": "speechmi_jax.estimators.api",
    "rankme": "speechmi_jax.estimators.spectral",
    "alpha_req": "speechmi_jax.estimators.spectral",
    "lidar": "speechmi_jax.estimators.spectral",
    "pwcca": "speechmi_jax.estimators.spectral",
    "nats_to_bits": "speechmi_jax.units",
    "bits_to_nats": "speechmi_jax.units",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'speechmi_jax' has no attribute {name!r}")
