#!/usr/bin/env bash
# Trains the model zoo (speechmi_jax/zoo/) on the offline pretraining set and ships it.
#
#   python -m speechmi_jax.data.build_pretrain --out "$PRETRAIN_DIR" --hours 3.0 --seed 0
#   PRETRAIN_DIR=... RUNS=runs/zoo experiments/train_zoo.sh [apc|vqapc|hubert-it1|hubert-it2|data2vec ...]
#   python -m speechmi_jax.zoo.ship --runs runs/zoo          # copies models + writes model cards
#
# Each model: 3 transformer layers of width 128, AdamW, batches of 8 one-second crops, an encoder
# exported at every checkpoint (models/step<N>/). STEPS and CKPT set the length and the spacing of
# the shipped checkpoints. hubert-it2 needs hubert-it1 finished (its k-means targets come from
# layer 2, the middle of it1's 3 layers).
set -euo pipefail
: "${PRETRAIN_DIR:?set PRETRAIN_DIR to the folder built by speechmi_jax.data.build_pretrain}"
RUNS=${RUNS:-runs/zoo}
STEPS=${STEPS:-1200}
CKPT=${CKPT:-300}
EVAL=${EVAL:-100}
COMMON=(--set "corpus=$PRETRAIN_DIR/manifest.tsv" --set steps=$STEPS --set checkpoint_every=$CKPT
        --set eval_every=$EVAL --set export_checkpoints=True --set max_dev_batches=4)
CAUSAL=(--set model.causal.hidden_size=128 --set model.causal.num_layers=3
        --set model.causal.num_heads=4 --set model.causal.intermediate_size=256)
BACKBONE=(--set model.hf_config.hidden_size=128 --set model.hf_config.num_hidden_layers=3
          --set model.hf_config.num_attention_heads=4 --set model.hf_config.intermediate_size=256)

train() {  # train NAME OBJECTIVE ARGS...
  local name=$1 obj=$2; shift 2
  mkdir -p "$RUNS"
  python -m speechmi_jax.cli pretrain "$obj" --out "$RUNS/$name" "${COMMON[@]}" "$@"
}

for name in "${@:-apc vqapc hubert-it1 hubert-it2 data2vec}"; do
  for n in $name; do
    case $n in
      apc) train apc-small apc "${CAUSAL[@]}" ;;
      vqapc) train vqapc-small vqapc "${CAUSAL[@]}" --set model.vq_temperature=2.0 ;;
      hubert-it1) train hubert-it1-small hubert "${BACKBONE[@]}" ;;
      hubert-it2) train hubert-it2-small hubert "${BACKBONE[@]}" \
                    --set "targets.source=$RUNS/hubert-it1-small/model" --set targets.layer=2 ;;
      data2vec) train data2vec-small data2vec "${BACKBONE[@]}" ;;
      *) echo "unknown zoo model $n (expected apc vqapc hubert-it1 hubert-it2 data2vec)" >&2; exit 2 ;;
    esac
  done
done
