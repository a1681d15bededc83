"""Test setup: 8 simulated CPU devices, so sharded code runs for real in every test run; LLVM
level 0 for the code XLA emits (the tests compile more than they run); one
persistent XLA compilation cache for the whole run.

XLA reads the flag when the backend starts and JAX reads its cache settings when it is
imported, so both are set before anything imports jax. They are environment variables, so
every process a test starts (``speechmi`` runs, scripts, notebook kernels, pytest-xdist
workers) inherits them: a step compiled once is loaded from disk by every later process that
traces it again. A ``JAX_COMPILATION_CACHE_DIR`` set by the caller is kept (e.g. one that
outlives the run); otherwise the cache is a temporary folder removed when the run ends.
"""

import os
import shutil
import tempfile

import pytest

# LLVM's optimisation level 0 for the CPU code XLA emits: the tests' models are tiny, so their
# compilations cost more than their runs; at level 0 a smoke pretraining run spends 32 % less
# CPU (BENCHMARKS.md, "Test suite"). XLA's own graph optimisations still run; only the machine
# code is less tuned.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8 "
                                   "--xla_backend_optimization_level=0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

_OWN_XLA_CACHE = None
if not os.environ.get("JAX_COMPILATION_CACHE_DIR"):
    _OWN_XLA_CACHE = tempfile.mkdtemp(prefix="speechmi-test-xla-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_XLA_CACHE
# every executable, however quick to compile or small: most steps of the tests' tiny models are
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    if _OWN_XLA_CACHE:  # only the process that made it (xdist workers inherit the variable)
        shutil.rmtree(_OWN_XLA_CACHE, ignore_errors=True)


# The files whose tests take longest (seconds on 2 cores), run first: with one file per worker at a
# time (pytest.ini), a long file started last would keep one worker busy after the other is done.
SLOW_FILES = ("test_multihost.py", "test_ssl_train.py", "test_pipeline.py", "test_experiments.py",
              "test_colab.py",
              "test_hostile.py", "test_est_resume.py", "test_label_free.py", "test_zoo.py",
              "test_masked.py", "test_ctc.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


@pytest.fixture(autouse=True, scope="module")
def _release_memory_after_each_file():
    """After each test file: drop the executables JAX keeps in memory (later files load what they
    need from the run's compilation cache) and hand freed pages back to the OS, so a pytest-xdist
    worker does not grow file after file (one worker reached 5.9 GB without this)."""
    yield
    import gc

    import jax

    from speechmi_jax.training import trim_heap

    gc.collect()
    jax.clear_caches()
    trim_heap()
