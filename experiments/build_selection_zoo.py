"""Builds the selection zoo: the points of the label-free model-selection study.

Two Table 1 families (APC on the causal log-mel backbone, HuBERT-style masked prediction on the
bidirectional one) at three sizes: 2 x 128 (seeds 0 and 1), 3 x 128 (seed 0) and the shipped
4 x 256 models (seed 0). The small runs are exported at steps 0 (the initialisation), 100, 200,
500, 1000 and 2000; the shipped recipes are taken as they are (steps 0, 100, 300, 1000, 2000;
both recipes now run on to 6000 with checkpoints at 3000, 4000 and 6000 too), so their runs
are the package's models, here with every checkpoint. 8 models, 46 distinct (model, checkpoint)
points when the study's results (experiments/results/selection_bundled.json) were computed,
with both shipped recipes at 2000 steps and without the telephone band (``telephone_prob``),
which they now use. A model's seed is its population seed (its batches are
the recipe's, a function of ``config.seed`` and the step, so seed 1 trained alone equals member
1 of the recipe's population of two). Seeds train one at a time: on the 2-core machine a vmapped
population of two 3 x 128 members took 538 ms a step, one member alone 155 ms
(``benchmarks/bench_pretrain.py``).

Not in git: the runs go to ``CACHE/runs/<model>/`` (Orbax checkpoints; an interrupted build
resumes where it stopped), each model is shipped to ``CACHE/zoo/<model>/`` with its card
(``speechmi_jax.zoo.ship``: float16 weights, data, command, steps, wall time, machine, final
dev bound), and ``CACHE/zoo/HASH`` holds the SHA-256 over every shipped weights file. With
``SPEECHMI_ZOO_PATH=CACHE/zoo`` the zoo's names resolve there first (the shipped models'
checkpoints then include the ones the package leaves out).

    python -m speechmi_jax.data.build_pretrain --out "$PRETRAIN_DIR" --hours 3 --seed 0
    python experiments/build_selection_zoo.py --pretrain-dir "$PRETRAIN_DIR" \\
        [--cache ~/.cache/speechmi/selection-zoo] [--smoke]
    SPEECHMI_ZOO_PATH=~/.cache/speechmi/selection-zoo/zoo \\
        speechmi run experiments/configs/ssl_selection_bundled.py --out runs/ssl_selection

``--smoke`` trains each recipe's ``--smoke`` settings (a few steps) into the same layout.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

from speechmi_jax.ssl import trainer
from speechmi_jax.zoo import ship

GRID = (  # (recipe, seeds), in build order
    ("melapc_2x128", (0, 1)), ("melhubert_2x128", (0, 1)),
    ("melapc_3x128", (0,)), ("melhubert_3x128", (0,)),
    ("melapc_4x256", (0,)), ("melhubert_4x256", (0,)),
)
RECIPES = tuple(r for r, _ in GRID)
EXPORT_STEPS = [100, 200, 500, 1000, 2000]  # ~log-spaced (multiples of eval_every), + step 0
DEFAULT_CACHE = Path("~/.cache/speechmi/selection-zoo").expanduser()


def model_name(recipe: str, seed: int) -> str:
    """The shipped recipes keep their zoo names; the others are named by recipe and seed."""
    return ship.model_name(recipe) if recipe in ship.SHIPPED else f"{ship.model_name(recipe)}-s{seed}"


def recipe_config(recipe: str, seed: int, pretrain_dir: Path, smoke: bool):
    """The zoo recipe with this model's seed and the data; the small recipes with the selection
    zoo's checkpoints."""
    _, config = trainer.load_pretrain_config(f"zoo/{recipe}", smoke=smoke)
    config.population.seed = [seed]
    config.corpus = str(pretrain_dir / "manifest.tsv")
    if not smoke and recipe not in ship.SHIPPED:
        config.export_steps = list(EXPORT_STEPS)
    return trainer.validate_config(config)


def content_hash(zoo_dir: Path) -> str:
    """SHA-256 over (relative path, SHA-256 of the file) of every weights file, in path order."""
    h = hashlib.sha256()
    for f in sorted(zoo_dir.glob("*/step*/model.safetensors")):
        h.update(f"{f.relative_to(zoo_dir)} {hashlib.sha256(f.read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def build(pretrain_dir: Path, cache: Path, *, smoke: bool = False, recipes=RECIPES,
          machine: str | None = None) -> str:
    """Trains and ships every (recipe, seed) of the grid not shipped yet (only ``recipes``);
    returns the zoo's content hash."""
    zoo_dir = cache / "zoo"
    for recipe, seeds in GRID:
        if recipe not in recipes:
            continue
        for seed in seeds:
            name = model_name(recipe, seed)
            if (zoo_dir / name / "card.json").is_file():
                print(f"{name}: shipped already ({zoo_dir / name})")
                continue
            t0 = time.time()
            run = cache / "runs" / name
            trainer.pretrain(recipe_config(recipe, seed, pretrain_dir, smoke), run)
            command = (f"python experiments/build_selection_zoo.py --pretrain-dir $PRETRAIN_DIR"
                       f"{' --smoke' if smoke else ''}  # model {name}")
            card = ship.ship_one(recipe, run, pretrain_dir, zoo_dir, name=name, command=command,
                                 machine=machine)
            print(f"{name}: {card['parameters']:,} params, checkpoints {card['checkpoints']}, "
                  f"final dev bound {card['final_dev']['bound_bits']:.3f} bits "
                  f"({time.time() - t0:.0f} s)")
    digest = content_hash(zoo_dir)
    (zoo_dir / "HASH").write_text(f"{digest}  selection zoo weights\n")
    index = {"grid": [[r, list(s)] for r, s in GRID if r in recipes], "smoke": smoke,
             "content_hash": digest,
             "models": sorted(p.parent.name for p in zoo_dir.glob("*/card.json"))}
    (zoo_dir / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return digest


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pretrain-dir", required=True, type=Path,
                   help="the pretraining set's folder (speechmi_jax.data.build_pretrain)")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"default {DEFAULT_CACHE}")
    p.add_argument("--smoke", action="store_true", help="each recipe's --smoke settings")
    p.add_argument("--recipes", nargs="*", default=list(RECIPES), choices=list(RECIPES))
    p.add_argument("--machine", default=None, help="where it trained, for the cards")
    a = p.parse_args(argv)
    digest = build(a.pretrain_dir, a.cache, smoke=a.smoke, recipes=a.recipes, machine=a.machine)
    print(f"selection zoo in {a.cache / 'zoo'}: content hash {digest}\n"
          f"use it with SPEECHMI_ZOO_PATH={a.cache / 'zoo'}")


if __name__ == "__main__":
    main()
