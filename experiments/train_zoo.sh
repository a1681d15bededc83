#!/usr/bin/env bash
# Trains the model zoo's recipes (speechmi_jax/configs/zoo/*.py, one config file per model) on
# the offline pretraining set, then ships them into the package.
#
#   python -m speechmi_jax.data.build_pretrain --out "$PRETRAIN_DIR" --hours 3 --seed 0
#   PRETRAIN_DIR=... RUNS=runs/zoo experiments/train_zoo.sh [melapc_4x256 melhubert_4x256 ...]
#   python -m speechmi_jax.zoo.ship --runs runs/zoo --pretrain-dir "$PRETRAIN_DIR"
#
# Default: every recipe in speechmi_jax/configs/zoo/. Each run resumes where it stopped. The
# recipe file holds every setting (architecture, data, steps, checkpoints); SMOKE=1 runs each
# recipe's --smoke settings instead (a few steps, for tests).
set -euo pipefail
: "${PRETRAIN_DIR:?set PRETRAIN_DIR to the folder built by speechmi_jax.data.build_pretrain}"
RUNS=${RUNS:-runs/zoo}
export SPEECHMI_PRETRAIN_DIR=$PRETRAIN_DIR
ZOO=$(python -c "import speechmi_jax.zoo.ship as s; print(' '.join(s.RECIPES))")
mkdir -p "$RUNS"
for recipe in ${@:-$ZOO}; do
  python -m speechmi_jax.launch pretrain "zoo/$recipe" --out "$RUNS/${recipe//_/-}" ${SMOKE:+--smoke}
done
