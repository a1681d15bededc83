"""Test setup: 8 simulated CPU devices, so sharded code runs for real in every test run.

XLA reads the flag when the backend starts, so it is set before anything imports jax.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
