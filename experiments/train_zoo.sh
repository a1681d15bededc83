#!/usr/bin/env bash
# Trains the model zoo (speechmi_jax/zoo/) on the offline pretraining set and ships it.
#
#   python -m speechmi_jax.data.build_pretrain --out "$PRETRAIN_DIR" --hours 3.0 --seed 0
#   PRETRAIN_DIR=... RUNS=runs/zoo STEPS=2400 CKPT=600 EVAL=200 experiments/train_zoo.sh \
#       [apc|vqapc|hubert-it1|hubert-it2|data2vec ...]     # default: all five, in this order
#   python -m speechmi_jax.zoo.ship --runs runs/zoo --pretrain-dir "$PRETRAIN_DIR" \
#       --recipe 'PRETRAIN_DIR=$PRETRAIN_DIR RUNS=runs/zoo STEPS=2400 CKPT=600 EVAL=200 experiments/train_zoo.sh'
#                                     # copies the models (float16) into the package + model cards
#
# Each model: 3 transformer layers of width 128, AdamW, batches of 8 one-second crops, an encoder
# exported at every checkpoint (models/step<N>/). STEPS and CKPT set the length and the spacing of
# the shipped checkpoints. hubert-it2 needs hubert-it1 finished (its k-means targets come from
# layer 2, the middle of it1's 3 layers). VQ-APC's Gumbel temperature is 2.0: at 1.0 its 32-code
# VQ collapsed to a single code within 200 steps (perplexity 1.0, bound 0).
set -euo pipefail
: "${PRETRAIN_DIR:?set PRETRAIN_DIR to the folder built by speechmi_jax.data.build_pretrain}"
RUNS=${RUNS:-runs/zoo}
STEPS=${STEPS:-2400}
CKPT=${CKPT:-600}
EVAL=${EVAL:-200}
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
