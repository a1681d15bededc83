"""Copies trained zoo runs into the package (float16) and writes their model cards.

    python -m speechmi_jax.zoo.ship --runs runs/zoo --pretrain-dir "$PRETRAIN_DIR" [--checkpoints all]

For each shipped recipe (``SHIPPED``; a model is named after its recipe file in
``speechmi_jax/configs/zoo/``) and its run folder ``RUNS/<name>`` written by
``experiments/train_zoo.sh``: the exported checkpoints ``models/step<N>/`` (the final one, or
all) become ``speechmi_jax/zoo/<name>/step<N>/`` (weights as float16; ``step0`` is the run's
initialisation, the random-init control), the final Orbax checkpoint's heads (the backbone is
the final step's weights) become ``objective.safetensors``, and
``card.json`` / ``card.md`` record the data, command, steps, wall time, machine, the final dev
record of ``metrics.jsonl`` and the dev metric recomputed from the shipped weights on a fixed
slice of the bundled corpus (:mod:`speechmi_jax.zoo.metric`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np

from speechmi_jax import training
from speechmi_jax.zoo import ZOO_DIR
from speechmi_jax.zoo import metric
from speechmi_jax.ssl import models, trainer

RECIPE_DIR = Path(__file__).parents[1] / "configs" / "zoo"
# Every recipe file (one model each); a model's name is its recipe's with '-' for '_'.
RECIPES = sorted(p.stem for p in RECIPE_DIR.glob("*.py") if p.stem not in ("__init__", "common"))
# What the package ships (at most 40 MB of float16 weights together); the other recipes' runs
# stay in the selection zoo's cache (experiments/configs/ssl_selection_bundled.py).
SHIPPED = ("melapc_4x256", "melhubert_4x256")


def model_name(recipe: str) -> str:
    return recipe.replace("_", "-")


def description(recipe: str) -> str:
    """The recipe docstring's first sentence after '<name>: '."""
    import ast

    doc = ast.get_docstring(ast.parse((RECIPE_DIR / f"{recipe}.py").read_text())) or recipe
    return doc.split("\n\n")[0].replace("\n", " ").partition(": ")[2].rstrip(".")


DEV_SLICE = {"corpus": "bundled", "split": "dev", "utterances": 8, "crop_seconds": 1.0}
TOLERANCE = {"rel": 1e-3, "abs": 1e-3}  # recomputed vs recorded dev metric (float32 CPU)


def _fp16_copy(src: Path, dst: Path) -> int:
    """config.json + model.safetensors (float32 -> float16); returns the parameter count."""
    from safetensors import safe_open
    from safetensors.numpy import load_file, save_file

    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / "config.json", dst / "config.json")
    with safe_open(str(src / "model.safetensors"), "np") as f:
        meta = f.metadata()
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: np.ascontiguousarray(v.astype(np.float16) if v.dtype == np.float32 else v)
               for k, v in tensors.items()}, str(dst / "model.safetensors"), metadata=meta)
    return int(sum(v.size for v in tensors.values()))


def _export_init(config: dict, dst: Path, seed: int) -> None:
    """The run's initialisation (the member's ``seed``), exported like a checkpoint: ``step0``,
    the model's own random-init control. HuBERT's init needs only K (the backbone's init does not
    depend on the head), so no targets are fitted."""
    import tempfile

    import jax

    cfg = trainer.stored_config(config)  # a run written before a config key reads its default
    if cfg.objective == "hubert":  # the init does not depend on the targets: K is enough
        task = models.MaskedTask("hubert", trainer.backbone(cfg), num_codes=cfg.targets.k)
    else:
        task = trainer.build_task(cfg, None, None, dst)
    params, _ = task.init(jax.random.PRNGKey(seed))
    with tempfile.TemporaryDirectory() as tmp:
        task.export(jax.device_get(params), Path(tmp))
        _fp16_copy(Path(tmp), dst)


def _final_state(mdir: Path, config: dict, member: int):
    """(state, step) of the member's newest checkpoint, read as the trainer resumes it: files,
    run identity and checksum verified (``trainer.checkpoint_store``)."""
    store = trainer.checkpoint_store(mdir, config, member, config["keep_checkpoints"])
    try:
        states, step = training.restore_latest([store], None)
    finally:
        store.close()
    if states is None:
        raise ValueError(f"{mdir / 'checkpoints'}: no checkpoint to ship")
    return states[0], step


DEV_KEYS = ("loss", "nll_bits", "h_target_bits", "bound_bits", "perplexity", "masked_acc", "target_var")


def dev_record(rec: dict) -> dict:
    """The dev fields of one metrics.jsonl record, without the ``dev_`` prefix."""
    return {k: rec[f"dev_{k}"] for k in DEV_KEYS if rec.get(f"dev_{k}") is not None}


def checkpoint_dev(records: list[dict], checkpoint_steps: list[int]) -> dict:
    """{str(step): dev record} at every shipped checkpoint (step 0: the initialisation's dev
    record, written before the first step): the objective's own bound along training, which the
    selection analysis (``analysis/selection.py``) uses as a label-free predictor."""
    by_step = {r["step"]: r for r in records if "dev_bound_bits" in r}
    missing = [s for s in checkpoint_steps if s not in by_step]
    if missing:
        raise ValueError(f"metrics.jsonl has no dev record at checkpoint steps {missing}; "
                         f"eval_every must divide checkpoint_every")
    return {str(s): dev_record(by_step[s]) for s in checkpoint_steps}


def ship_one(recipe: str, run: Path, pretrain_dir: Path, zoo_dir: Path = ZOO_DIR, *, member: int = 0,
             checkpoints=None, machine: str | None = None, name: str | None = None,
             command: str | None = None) -> dict:
    """Ships member ``member`` of the run of ``recipe`` as ``zoo_dir/<name>/``: the exported
    checkpoints (all, or the steps in ``checkpoints``; the final one always), step 0 (the
    initialisation), the objective's heads and the card. ``name`` defaults to the recipe's
    model name, ``command`` (the card's) to the ``train_zoo.sh`` line that trains it."""
    name = name or model_name(recipe)
    config = json.loads((run / "pretrain_config.json").read_text())
    mdir = run / f"member-{member}" if (run / f"member-{member}").is_dir() else run
    records = trainer.read_metrics(mdir / "metrics.jsonl")
    final = records[-1]
    out = zoo_dir / name
    if out.exists():
        shutil.rmtree(out)
    exported = sorted((p for p in (mdir / "models").iterdir() if p.name.startswith("step")),
                      key=lambda p: int(p.name[4:]))
    if checkpoints is not None:
        exported = [p for p in exported if int(p.name[4:]) in checkpoints or p == exported[-1]]
    params_count = 0
    for p in exported:
        params_count = _fp16_copy(p, out / p.name)
    seed = config["population"]["seed"][member if len(config["population"]["seed"]) > 1 else 0]
    _export_init(config, out / "step0", seed)

    state, step = _final_state(mdir, config, member)
    if step != config["steps"]:
        raise ValueError(f"{mdir}: newest checkpoint is step {step}, the run has {config['steps']} steps")
    centroids, targets_source = None, None
    if config["objective"] == "hubert":
        centroids = np.load(run / "targets.npz")["centroids"]
        src = config["targets"]["source"]
        # Iteration 2's source is iteration 1's exported model: the zoo's copy of it.
        parent = Path(src).parent.name if Path(src).name == "model" else Path(src).name
        targets_source = parent if parent in map(model_name, RECIPES) else src
    metric.save_objective(out / metric.OBJECTIVE_FILE, state["params"], state["aux"], centroids)

    meta = json.loads((pretrain_dir / "metadata.json").read_text())
    wall = (mdir / "model" / "model.safetensors").stat().st_mtime - (run / "pretrain_config.json").stat().st_mtime
    machine = machine or f"{os.cpu_count()}-core CPU ({platform.machine()})"
    card = {
        "name": name,
        "recipe": f"speechmi_jax/configs/zoo/{recipe}.py",
        "description": description(recipe),
        "objective": config["objective"],
        "member": member,
        "seed": seed,
        "data": {"manifest": "$PRETRAIN_DIR/manifest.tsv",
                 "build_command": meta["build_command"],
                 "content_hash": (pretrain_dir / "HASH").read_text().split()[0],
                 "hours": round(meta["total_duration_s"] / 3600, 3),
                 "utterances": meta["num_utterances"], "train_split": config["train_split"],
                 "dev_split": config["dev_split"]},
        "command": command or f"PRETRAIN_DIR=$PRETRAIN_DIR RUNS=runs/zoo experiments/train_zoo.sh {recipe}",
        "steps": config["steps"],
        "checkpoints": [0] + [int(p.name[4:]) for p in exported],  # 0: the initialisation
        "batch": f"{config['batch_size']} x {config['crop_seconds']} s crops",
        "population": len(config["population"]["seed"]),
        "wall_time_s": round(wall, 1),
        "machine": f"{machine}, jax {__import__('jax').__version__}",
        "parameters": params_count,
        "weights": "float16 safetensors",
        "final_dev": dev_record(final),
        "checkpoint_dev": checkpoint_dev(records, [0] + [int(p.name[4:]) for p in exported]),
        "final_train_loss": final.get("train_loss"),
        "collapse": final.get("collapse", False),
        "dev_slice": DEV_SLICE,
        "tolerance": TOLERANCE,
        "targets_source": targets_source,
        "config": config,
    }
    # The recorded metric comes from the shipped (float16) weights, read back as the test reads them.
    card["dev_slice_metric"] = metric.recompute(out, card)
    (out / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    (out / "card.md").write_text(render_card(card, out))
    for f in out.rglob("*"):  # safetensors writes 0600 files
        f.chmod(0o755 if f.is_dir() else 0o644)
    return card


def render_card(c: dict, out: Path) -> str:
    d, f = c["data"], c["final_dev"]
    size = sum(p.stat().st_size for p in out.glob("step*/model.safetensors"))
    lines = [
        f"# {c['name']}", "", c["description"] + ".", "",
        f"- Load: `smi.load_encoder(\"{c['name']}\")` (step {c['checkpoints'][-1]}), or "
        f"`\"{c['name']}@step<N>\"` with N in {c['checkpoints']} (step 0: the run's initialisation, "
        f"this model's random-init control).",
        f"- Data: the offline pretraining set `{d['manifest']}` ({d['hours']} h, {d['utterances']} "
        f"utterances, content hash `{d['content_hash']}`), built by `{d['build_command']}`; trained "
        f"on split `{d['train_split']}`, dev records on `{d['dev_split']}`.",
        f"- Command: `{c['command']}` (the full config is `config` in card.json).",
        f"- Steps: {c['steps']}, batches of {c['batch']}; wall time {c['wall_time_s']:.0f} s on "
        f"{c['machine']}.",
        f"- Parameters: {c['parameters']:,} ({c['weights']}; {size / 1e6:.2f} MB for the "
        f"{len(c['checkpoints'])} checkpoints).",
        f"- Final dev record (metrics.jsonl, step {c['steps']}): loss {f['loss']:.4f}, "
        f"H(Z_target) {f['h_target_bits']:.3f} bits, bound {f['bound_bits']:.3f} bits"
        + "".join(f", {k} {f[k]:.3f}" for k in ("perplexity", "masked_acc", "target_var") if k in f)
        + (", collapse flagged" if c["collapse"] else "") + ".",
        f"- Recorded dev metric (shipped weights, {c['dev_slice']['utterances']} x "
        f"{c['dev_slice']['crop_seconds']} s of the bundled corpus's `{c['dev_slice']['split']}` "
        f"split): " + ", ".join(f"{k} {v:.5f}" for k, v in c["dev_slice_metric"].items())
        + f"; reproduced by tests/test_zoo.py within rel {c['tolerance']['rel']:g} / abs "
        f"{c['tolerance']['abs']:g}.",
    ]
    return "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", required=True, type=Path, help="the RUNS folder of experiments/train_zoo.sh")
    p.add_argument("--pretrain-dir", required=True, type=Path, help="the pretraining set's folder")
    p.add_argument("--zoo-dir", type=Path, default=ZOO_DIR, help="where to ship (default: the package's zoo)")
    p.add_argument("--checkpoints", default="final",
                   help="'final' (step 0 and the final step: the package's size budget) or 'all'")
    p.add_argument("--machine", default=None, help="where it trained, for the cards (e.g. the load)")
    p.add_argument("recipes", nargs="*", default=list(SHIPPED), help=f"default: {list(SHIPPED)}")
    a = p.parse_args(argv)
    for recipe in a.recipes:
        if recipe not in RECIPES:
            raise SystemExit(f"unknown zoo recipe {recipe!r}; expected one of {RECIPES}")
        card = ship_one(recipe, a.runs / model_name(recipe), a.pretrain_dir, a.zoo_dir,
                        checkpoints=[] if a.checkpoints == "final" else None, machine=a.machine)
        print(f"{card['name']}: {card['parameters']:,} params, checkpoints {card['checkpoints']}, final "
              f"dev bound {card['final_dev']['bound_bits']:.3f} bits, slice metric {card['dev_slice_metric']}")


if __name__ == "__main__":
    main()
