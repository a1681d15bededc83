#!/usr/bin/env bash
# The GPU rows of BENCHMARKS.md ("On a GPU"): each JAX-vs-PyTorch benchmark with both sides on
# the one GPU, in float32 and in TensorFloat-32 matmuls. Run from the repository root on a machine
# with a CUDA build of jax and of torch, transformers, flax, optax, orbax-checkpoint and
# ml_collections importable, and speechmi_jax on the path (`pip install -e .` or PYTHONPATH=.):
#
#     bash benchmarks/accelerator.sh 2>&1 | tee accelerator.log
#
# A failing benchmark prints its traceback and the next one still runs. ~3 min on one H100.
set -u
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # JAX and PyTorch share the GPU's memory
export PYTHONUNBUFFERED=1
cd "$(dirname "$0")"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
python3 -c "import jax; print('jax devices:', jax.devices())"
for precision in float32 tf32; do
  for batch in 1 8; do
    echo "== bench_encoder.py --batch $batch --precision $precision"
    python3 bench_encoder.py --torch-device cuda --precision "$precision" --batch "$batch" --reps 20 --parts
  done
  echo "== bench_bank.py --step --precision $precision"
  python3 bench_bank.py --step --torch-device cuda --precision "$precision"
  echo "== bench_pretrain.py --precision $precision"
  python3 bench_pretrain.py --torch-device cuda --precision "$precision" --repeats 20
done
