"""One timing rule for the benchmarks: the median of repeated calls after a warm-up call."""

import time

import numpy as np


def median_seconds(fn, repeats: int) -> float:
    """Median wall seconds of ``fn()`` (which must block until its work is done) over
    ``repeats`` calls, after one warm-up call that may compile."""
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def matmul_peak() -> tuple[int, float]:
    """(n, GFLOP/s) of a jitted float32 [n, n] x [n, n] ``jnp.dot`` on random data, the machine's
    practical matmul peak (median of 5 after a warm-up call): n = 8192 on a GPU, which a 2048^3
    product leaves mostly idle, 2048 elsewhere."""
    import jax
    import jax.numpy as jnp

    n = 8192 if jax.default_backend() == "gpu" else 2048
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    dot = jax.jit(jnp.dot)
    return n, 2.0 * n**3 / median_seconds(lambda: dot(a, a).block_until_ready(), 5) / 1e9


def add_device_args(parser) -> None:
    """``--torch-device`` and ``--precision``: the flags every JAX-vs-PyTorch benchmark takes."""
    parser.add_argument("--torch-device", default="cpu",
                        help="where the PyTorch reference runs: cpu, or cuda on a GPU machine "
                             "(JAX uses its default backend, the GPU where there is one)")
    parser.add_argument("--precision", choices=("float32", "tf32"), default="float32",
                        help="float32 matmuls on both sides, or TensorFloat-32 on both (GPU only)")


def setup_devices(args):
    """Applies ``--precision`` to JAX and PyTorch alike; returns (torch device, sync) where
    ``sync()`` waits for the PyTorch work queued on that device (a no-op on CPU)."""
    import jax
    import torch

    tf32 = args.precision == "tf32"
    jax.config.update("jax_default_matmul_precision", "tensorfloat32" if tf32 else "highest")
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    device = torch.device(args.torch_device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    return device, sync


def describe_devices(args) -> str:
    """One line naming both sides' devices and the matmul precision, for every table's header."""
    import jax
    import torch

    gpu = ""
    if args.torch_device.startswith("cuda"):
        gpu = f" ({torch.cuda.get_device_name()})"
    return (f"jax {jax.__version__} on {jax.devices()[0].platform} ({jax.devices()[0].device_kind}); "
            f"torch {torch.__version__} on {args.torch_device}{gpu}; {args.precision} matmuls")
