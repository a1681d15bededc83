"""Test setup: 8 simulated CPU devices, so sharded code runs for real in every test run; LLVM
level 0 for the code XLA emits (the tests compile more than they run); one
persistent XLA compilation cache for the whole run.

XLA reads the flag when the backend starts and JAX reads its cache settings when it is
imported, so both are set before anything imports jax. They are environment variables, so
every process a test starts (``speechmi`` runs, scripts, notebook kernels, pytest-xdist
workers) inherits them: a step compiled once is loaded from disk by every later process that
traces it again. Processes that tests start take ``xla_env.child_env()``: the same, on one
device unless the test asks for more. A ``JAX_COMPILATION_CACHE_DIR`` set by the caller is kept
(e.g. one that outlives the run); otherwise the cache is a temporary folder removed when the run
ends.
"""

import os
import shutil
import tempfile

import pytest

from xla_env import xla_flags  # tests/xla_env.py

# LLVM's optimisation level 0 for the CPU code XLA emits: the tests' models are tiny, so their
# compilations cost more than their runs; at level 0 a smoke pretraining run spends 32 % less
# CPU (BENCHMARKS.md, "Test suite"). XLA's own graph optimisations still run; only the machine
# code is less tuned. Processes the tests start get one device (tests/xla_env.py).
os.environ.setdefault("XLA_FLAGS", xla_flags(8))
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
              "test_colab.py", "test_ssl_smoke.py",
              "test_hostile.py", "test_est_resume.py", "test_label_free.py", "test_zoo.py",
              "test_masked.py", "test_ctc.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: file order kept


def pytest_configure(config):
    config.addinivalue_line("markers", "all_devices: the file's code runs on all 8 simulated devices "
                                       "by default (the others: one)")


@pytest.fixture(autouse=True, scope="module")
def _one_device_by_default(request):
    """Code that names no devices runs on one (``training.default_devices``) unless the file is
    marked ``all_devices``: on 2 cores an 8-way split of a tiny bank or run costs more than the
    work (test_label_free.py: 58 s on 8 devices, 28 s on 1). Tests of sharding name their
    devices or carry the mark."""
    if request.node.get_closest_marker("all_devices") is not None:
        yield
        return
    import jax

    from speechmi_jax import training

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(training, "default_devices", lambda: jax.devices()[:1])
        yield


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
