"""The ``speechmi`` entry point's malloc settings (speechmi_jax/launch.py): a large block comes
from the heap instead of its own ``mmap`` (so freeing it does not hand its pages back to the
kernel), only when set before numpy / jax are imported, not with SPEECHMI_MALLOC=default, and
only for ``speechmi pretrain``."""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest


PROBE = """
import ctypes, json, sys
from speechmi_jax import launch
kept = launch.keep_freed_memory()
import numpy as np

class Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Mallinfo2
block = np.ones(64 << 18, np.float32)  # 64 MB, past glibc's largest mmap threshold
info = libc.mallinfo2()
print(json.dumps({"kept": kept, "again": launch.keep_freed_memory(), "mmapped": info.hblkhd,
                  "heap": info.arena}))
"""


def _probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE], env={**os.environ, **env},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_large_blocks_come_from_the_heap_once_set():
    kept = _probe()
    assert kept["kept"] and not kept["again"]  # the second call comes after numpy's import
    assert kept["mmapped"] < 1 << 20 and kept["heap"] >= 64 << 20, kept
    default = _probe(SPEECHMI_MALLOC="default")
    assert not default["kept"]
    assert default["mmapped"] >= 64 << 20, default  # glibc's own: the block is its own mapping


def test_the_console_script_goes_through_the_launcher():
    setup = Path(__file__).resolve().parents[1] / "setup.py"
    assert '"speechmi=speechmi_jax.launch:main"' in setup.read_text()


ROUTE = """
import sys
from speechmi_jax import launch
launch.keep_freed_memory = lambda: print("KEPT")
sys.exit(launch.main(sys.argv[1:]))
"""


@pytest.mark.parametrize("command, kept", [("pretrain", True), ("demo", False)])
def test_only_pretraining_keeps_freed_memory(command, kept):
    out = subprocess.run([sys.executable, "-c", ROUTE, command, "--help"], capture_output=True,
                         text=True, check=True).stdout
    assert ("KEPT" in out) == kept and f"usage: speechmi {command}" in out
