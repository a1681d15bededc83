"""HuBERT-base forward on 10 s of audio: our Flax encoder vs transformers' PyTorch model.

Both run batch 1, float32, random weights, in this process, with the same thread count;
repetitions are interleaved (ours, torch, ours, torch, ...) and medians reported, so load
from other processes hits both alike. Also reports achieved GFLOP/s (FLOPs counted
analytically from the architecture) against a float32 matmul peak measured here with a
large ``jnp.dot``.

    python benchmarks/bench_encoder.py [--seconds 10] [--reps 7]

Takes ~2-4 min on a 2-core CPU (compile ~10 s, each forward a few seconds). On a GPU machine,
``--torch-device cuda`` puts the reference on the GPU JAX uses (``--batch``, ``--precision``).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from speechmi_jax.encoders import wav2vec2
from timing import add_device_args, describe_devices, matmul_peak, setup_devices  # benchmarks/timing.py


def forward_flops(arch: wav2vec2.Arch, num_samples: int) -> dict[str, float]:
    """Multiply-add FLOPs (2 per MAC) of one forward pass, by part; norms/activations excluded."""
    flops, n, c_in = {}, num_samples, 1
    stem = 0.0
    for c, k, s in zip(arch.conv_dim, arch.conv_kernel, arch.conv_stride):
        n = (n - k) // s + 1
        stem += 2.0 * n * k * c_in * c
        c_in = c
    t, d, ff = n, arch.hidden_size, arch.intermediate_size
    flops["conv stem"] = stem
    flops["feature projection"] = 2.0 * t * c_in * d
    flops["positional conv"] = 2.0 * t * arch.pos_conv_kernel * (d // arch.pos_conv_groups) * d * arch.pos_conv_layers
    flops["attention projections"] = arch.num_layers * 2.0 * t * 4 * d * d
    flops["attention scores"] = arch.num_layers * 2.0 * 2 * t * t * d
    flops["feed-forward"] = arch.num_layers * 2.0 * t * 2 * d * ff
    return flops


def _time(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--arch", default="hubert-base")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--parts", action="store_true",
                        help="also time the conv stem alone on both sides (the rest is the difference)")
    add_device_args(parser)
    args = parser.parse_args()

    import torch
    import transformers

    threads = os.cpu_count()
    torch.set_num_threads(threads)
    device, sync = setup_devices(args)
    num_samples = int(args.seconds * wav2vec2.SAMPLE_RATE)
    x = np.random.default_rng(0).standard_normal((args.batch, num_samples)).astype(np.float32)
    lengths = np.full((args.batch,), num_samples, np.int32)

    enc = wav2vec2.random_wav2vec2_family(args.arch, seed=0)
    arch = wav2vec2.arch_from_config(enc.config)
    xj, lj = jnp.asarray(x), jnp.asarray(lengths)
    start = time.perf_counter()
    enc(xj, lj).hidden_states.block_until_ready()
    compile_s = time.perf_counter() - start

    model_cls = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model", "wavlm": "WavLMModel",
                 "data2vec-audio": "Data2VecAudioModel"}[arch.model_type]
    model = getattr(transformers, model_cls)(enc.config).eval().to(device)
    xt = torch.from_numpy(x).to(device)

    def run_torch():
        with torch.no_grad():
            model(xt, output_hidden_states=True)
        sync()

    def run_ours():
        enc(xj, lj).hidden_states.block_until_ready()

    run_torch()
    ours, ref = [], []
    for _ in range(args.reps):
        ours.append(_time(run_ours))
        ref.append(_time(run_torch))
    n_peak, peak = matmul_peak()
    if args.parts:
        stem = wav2vec2.FeatureEncoder(arch, name="feature_extractor")
        stem_fn = jax.jit(lambda p, w, n: stem.apply({"params": p}, w, n)[0])
        stem_params = enc.params["feature_extractor"]

        def run_torch_stem():
            with torch.no_grad():
                model.feature_extractor(xt)
            sync()

        stem_fn(stem_params, xj, lj).block_until_ready()
        run_torch_stem()
        s_ours = statistics.median(
            _time(lambda: stem_fn(stem_params, xj, lj).block_until_ready()) for _ in range(args.reps))
        s_ref = statistics.median(_time(run_torch_stem) for _ in range(args.reps))
    t_ours, t_ref = statistics.median(ours), statistics.median(ref)
    flops = {k: v * args.batch for k, v in forward_flops(arch, num_samples).items()}
    frames = args.batch * int(wav2vec2.num_frames(arch, np.asarray(num_samples)))
    total = sum(flops.values())

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    print(f"machine: {cpu}, {threads} threads; {describe_devices(args)}")
    print(f"{args.arch}, batch {args.batch}, {args.seconds:g} s audio each, float32 weights, "
          f"all hidden states, {args.reps} interleaved reps")
    print(f"compile (ours, first call): {compile_s:.1f} s")
    print(f"ours  (jit, warm): median {t_ours * 1e3:8.1f} ms   all: {[round(t * 1e3, 1) for t in ours]}")
    print(f"torch (eval):      median {t_ref * 1e3:8.1f} ms   all: {[round(t * 1e3, 1) for t in ref]}")
    print(f"speed-up vs torch: {t_ref / t_ours:.2f}x; frames/s: ours {frames / t_ours:.0f}, "
          f"torch {frames / t_ref:.0f} ({frames} frames per call)")
    if args.parts:
        print(f"conv stem alone: ours {s_ours * 1e3:.1f} ms, torch {s_ref * 1e3:.1f} ms; the rest "
              f"(projection + transformer): ours {(t_ours - s_ours) * 1e3:.1f} ms, torch {(t_ref - s_ref) * 1e3:.1f} ms")
    print(f"forward FLOPs: {total / 1e9:.1f} GFLOP "
          + ", ".join(f"{k} {v / total:.0%}" for k, v in flops.items()))
    print(f"matmul peak (jnp.dot {n_peak}^2 f32, {args.precision}): {peak:.1f} GFLOP/s")
    print(f"achieved: ours {total / t_ours / 1e9:.1f} GFLOP/s = {total / t_ours / 1e9 / peak:.0%} of peak; "
          f"torch {total / t_ref / 1e9:.1f} GFLOP/s = {total / t_ref / 1e9 / peak:.0%}")


if __name__ == "__main__":
    main()
