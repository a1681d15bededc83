"""The ``speechmi`` command's entry point: for ``speechmi pretrain``, glibc's malloc set up for
XLA's CPU runtime; then the CLI.

XLA's CPU runtime allocates each step's temporary buffers afresh and frees them after it.
With glibc's defaults a freed block of more than 32 MB (and, past the dynamic threshold, many
smaller ones) goes back to the kernel, and the next step's pages are faulted in and zeroed
again: on the zoo's MLM backbone (16 x 2 s) that is ~63,000 page faults, ~250 MB, per forward
and backward (BENCHMARKS.md, "Pretraining"). :func:`keep_freed_memory` keeps freed memory in
the process instead: one malloc arena, no ``mmap`` for large blocks, the heap's top trimmed
only past 2 GB. A training loop repeats the same step, so what it keeps is what it reuses (the
zoo's APC step: 27 % faster). The measuring commands (``demo``, ``run``) keep glibc's settings:
their work changes shape from encoder to encoder, and on a demo of two encoders the settings
cost 15 % more time and 170 MB more peak memory (BENCHMARKS.md, "Pretraining").

The settings only take hold before any thread allocates, i.e. before numpy or jax is imported,
so they are made here, in the console script, not in the library. ``SPEECHMI_MALLOC=default``
leaves glibc's settings alone; elsewhere than glibc nothing changes.
"""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's malloc.h
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1))
ENV = "SPEECHMI_MALLOC"


def keep_freed_memory() -> bool:
    """glibc's ``mallopt``: one arena, no ``mmap``'d blocks, no trimming below 2 GB -> whether
    all three took (False off glibc, with ``SPEECHMI_MALLOC=default``, or once numpy / jax are
    imported: their threads have made their own arenas by then)."""
    if os.environ.get(ENV, "") == "default" or "numpy" in sys.modules or "jax" in sys.modules:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return all(mallopt(param, value) == 1 for param, value in SETTINGS)


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["pretrain"]:
        keep_freed_memory()
    from speechmi_jax import cli

    return cli.main(argv)


if __name__ == "__main__":
    sys.exit(main())
