"""A zoo model's recorded dev metric: its objective's dev loss and bound, recomputed from weights.

The slice is small and fixed so the check runs in seconds: the first ``dev_slice.utterances``
utterances of the bundled corpus's dev split, each cropped to its first ``crop_seconds``, one
batch (:func:`speechmi_jax.ssl.data.dev_batches`), evaluated like the trainer's dev records
(``train=False``, the eval key of member 0, its hyperparameters). HuBERT targets are the run's
own k-means centroids (stored in ``objective.safetensors``) assigned on the slice's frames of the
target source (MFCC, or the zoo's iteration-1 model). The objective's weights are the shipped
float16 ones, so the value recorded at shipping time is what these weights give.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from speechmi_jax import zoo
from speechmi_jax.data.corpus import load_corpus
from speechmi_jax.encoders.registry import load_encoder
from speechmi_jax.ssl import data as data_lib
from speechmi_jax.ssl import trainer

OBJECTIVE_FILE = "objective.safetensors"
METRICS = ("loss", "nll_bits", "h_target_bits", "bound_bits")


BACKBONE_KEYS = ("encoder", "backbone")  # APC's / the masked tasks' backbone subtree


def save_objective(path: Path, params, aux, centroids=None) -> None:
    """Writes what the shipped encoder lacks to recompute the objective: the trained params less
    the backbone (heads, VQ, mask embedding), the aux tree (data2vec's EMA teacher), float16,
    and the HuBERT centroids (float32). The backbone is the final checkpoint's shipped weights."""
    from flax import traverse_util
    from safetensors.numpy import save_file

    tensors = {}
    heads = {k: v for k, v in params.items() if k not in BACKBONE_KEYS}
    for prefix, tree in (("params", heads), ("aux", aux)):
        for k, v in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items():
            tensors[f"{prefix}/{k}"] = np.ascontiguousarray(np.asarray(v, np.float32).astype(np.float16))
    if centroids is not None:
        tensors["centroids"] = np.ascontiguousarray(np.asarray(centroids, np.float32))
    save_file(tensors, str(path))


def load_objective(model_dir: Path, backbone_key: str):
    """(params, aux, centroids or None) of a shipped model: :func:`save_objective`'s file with the
    final checkpoint's encoder weights as ``params[backbone_key]``, float32."""
    from flax import traverse_util
    from safetensors.numpy import load_file


    flat = load_file(str(model_dir / OBJECTIVE_FILE))
    trees = {"params": {}, "aux": {}}
    for k, v in flat.items():
        prefix, _, rest = k.partition("/")
        if prefix in trees:
            trees[prefix][rest] = jnp.asarray(v, jnp.float32)
    unflat = {p: traverse_util.unflatten_dict(t, sep="/") for p, t in trees.items()}
    final = sorted(zoo.step_dirs(model_dir), key=lambda p: int(p.name[4:]))[-1]
    unflat["params"][backbone_key] = load_encoder(final).params
    return unflat["params"], unflat["aux"], flat.get("centroids")


def config_for_slice(card: dict) -> ml_collections.ConfigDict:
    """The run's pretraining config narrowed to the shipped member (its own shift, weights),
    its HuBERT target source made loadable here (a zoo name). A key the card's config predates
    reads as its default, which keeps the behaviour the model was trained with."""
    config = trainer.stored_config(card["config"])
    hp = trainer.population(config)[card.get("member", 0)]  # the lists' broadcast, in one place
    config.population = ml_collections.ConfigDict({k: [v] for k, v in hp.items()})
    if config.objective == "hubert" and card.get("targets_source"):
        config.targets.source = card["targets_source"]
    return config


def evaluate(config, params, aux, centroids, slice_spec: dict) -> dict:
    """The objective's metrics {loss, nll_bits, h_target_bits, bound_bits} on the dev slice."""
    corpus = load_corpus(slice_spec["corpus"])
    dev = data_lib.load_split(corpus, slice_spec["split"], slice_spec["utterances"])
    with tempfile.TemporaryDirectory() as tmp:
        task = trainer.build_task(config, corpus, {"train": dev, "dev": dev}, Path(tmp),
                                  centroids=centroids)
    crop = int(round(slice_spec["crop_seconds"] * 16000)) // task.frame_hop * task.frame_hop
    code_frames = int(task.backbone.num_frames(np.asarray(crop))) if task.has_codes else 0
    batch = data_lib.dev_batches(dev, len(dev), crop, task.frame_hop, code_frames, 1)[0]
    member = trainer.population(config)[0]
    hp = {k: v[0] for k, v in trainer.hyperparameters([member], config, task).items()}
    key = jax.random.fold_in(jax.random.PRNGKey(member["seed"]), trainer.EVAL_FOLD)
    _, m = jax.jit(lambda p, a, b: task.loss(p, a, b, key, hp, False))(params, aux, batch)
    return {k: float(m[k]) for k in METRICS}


def backbone_key(card: dict) -> str:
    return "encoder" if card["objective"] in ("apc", "vqapc") else "backbone"


def recompute(model_dir: Path, card: dict) -> dict:
    params, aux, centroids = load_objective(model_dir, backbone_key(card))
    return evaluate(config_for_slice(card), params, aux, centroids, card["dev_slice"])


def recompute_dev_metric(name: str) -> dict:
    """The objective's dev metrics of ``name``'s final weights on the card's dev slice."""
    return recompute(zoo.folder(name), zoo.card(name))
