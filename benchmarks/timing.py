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
