"""XLA settings for the test run and for the processes tests start.

The test processes themselves get 8 simulated CPU devices, so the sharded code runs for real
(tests/conftest.py). A ``speechmi`` run, script or notebook kernel that a test starts gets one
device unless the test asks for more: on 2 CPU cores the 8-way split costs about a quarter of a
small run's time (a demo smoke run: 182 s on 8 devices, 144 s on 1), and what those runs check
(the pipeline, resumption, reports, experiments) does not depend on the device count; the
sharded end-to-end runs (the TPU-sweep notebook, the multi-host tests) say so themselves.
Both settings also compile at LLVM's optimisation level 0: the tests' models are tiny, so their
compilations cost more than their runs (BENCHMARKS.md, "Test suite").
"""

import os

OPT_LEVEL = "--xla_backend_optimization_level=0"


def xla_flags(devices: int) -> str:
    """XLA_FLAGS for a process with ``devices`` simulated CPU devices."""
    return f"--xla_force_host_platform_device_count={devices} {OPT_LEVEL}"


def child_env(devices: int = 1, **extra: str) -> dict:
    """This process' environment (offline hub, the run's shared XLA cache) for a process a test
    starts, with ``devices`` simulated CPU devices and ``extra`` variables."""
    return {**os.environ, "XLA_FLAGS": xla_flags(devices), **extra}
