"""Plug-ins defined outside the package, as a user would write them, one of each kind:

* an SSL objective: APC that predicts the next frame (n = 1), under a new name and family row;
* a measure, ``toy_active_fraction``: the share of a layer's activations above zero on the
  test frames, per layer, its interval from resampling test utterances;
* an encoder family, model_type ``toy_projection``: log-mel frames (layer 0) through
  ``num_layers`` fixed random linear maps with tanh (layers 1..L), the maps drawn from the
  ``seed`` of the folder's ``config.json`` (:func:`write_toy_checkpoint` writes one).
"""

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from speechmi_jax import measures
from speechmi_jax.analysis import results
from speechmi_jax.encoders import audio_features, registry as encoders
from speechmi_jax.encoders.base import Encoder, EncoderOutput
from speechmi_jax.estimators import bootstrap
from speechmi_jax.ssl import models, registry

TOY_OBJECTIVE = registry.register(registry.Objective(
    name="toy_next_frame", family="APC", views="frames <= t -> frame t+1",
    z_target="input log-mel frame", p_psi="Gaussian on the residual", h_target="Gaussian entropy",
    build=lambda config, backbone, ctx: models.APCTask(backbone.arch, name="toy_next_frame"),
    causal=True))

# ------------------------------------------------------------------------------- the measure

results.register_measure("toy_active_fraction", "fraction", higher_is_better=True,
                         kind="label_free", description="share of the layer's activations above "
                                                        "zero on the test frames")


@measures.register("toy_active_fraction", ("toy_active_fraction",),
                   ("spectral.num_bootstrap", "seed"))
def toy_active_fraction(x: measures.Inputs) -> list[dict]:
    rows = np.flatnonzero(x.splits == "test")
    groups = x.fs.utt_index[rows]
    layers = []
    for layer in range(x.fs.hidden.shape[0]):
        active = (np.asarray(x.fs.hidden[layer, rows]) > 0).mean(axis=1)   # per frame [P]
        value, ci = bootstrap.mean_ci(active, groups, seed=x.config.seed,
                                      num_replicates=x.config.spectral.num_bootstrap)
        layers.append((layer, value, ci, {"n_test": int(rows.size)}))
    return results.statistic_records(x.encoder, "toy_active_fraction", layers)


# ------------------------------------------------------------------------ the encoder family

TOY_MODEL_TYPE = "toy_projection"


def write_toy_checkpoint(folder, *, num_layers: int = 2, seed: int = 0) -> Path:
    """A model folder of the toy family: its config.json is the whole checkpoint."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(
        {"model_type": TOY_MODEL_TYPE, "num_layers": num_layers, "seed": seed}))
    return folder


def load_toy(path: Path, options: encoders.LoadOptions) -> Encoder:
    config = json.loads((path / "config.json").read_text())
    d = audio_features.N_MELS
    rng = np.random.default_rng(config["seed"])
    params = {"maps": [jnp.asarray(rng.normal(0.0, d ** -0.5, (d, d)), jnp.float32)
                       for _ in range(config["num_layers"])]}

    def apply_fn(params, waveforms, lengths) -> EncoderOutput:
        lengths = lengths.astype(jnp.int32)
        states = [audio_features.whisper_log_mel(waveforms, lengths)]      # [B, T, D]
        for w in params["maps"]:
            states.append(jnp.tanh(states[-1] @ w))
        mask = audio_features.frame_mask(lengths, states[0].shape[1])
        hidden = jnp.where(mask[None, :, :, None], jnp.stack(states), 0.0)  # [L + 1, B, T, D]
        return EncoderOutput(hidden_states=hidden.astype(options.dtype), mask=mask)

    return Encoder(name="toy-projection", apply_fn=apply_fn, params=params,
                   num_layers=config["num_layers"], hidden_size=d,
                   sample_rate=audio_features.SAMPLE_RATE,
                   frame_rate=audio_features.SAMPLE_RATE / audio_features.HOP, frame_offset_s=0.0,
                   num_frames_fn=audio_features.num_frames, config=config, dtype=options.dtype)


TOY_FAMILY = encoders.register_family(encoders.Family(
    "toy", model_types=(TOY_MODEL_TYPE,), load=load_toy))
