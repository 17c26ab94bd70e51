"""Helpers shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SHARED_DATA = HERE.parent.parent / "shared" / "data"
DEFAULT_PAIR = [
    SHARED_DATA / "homography/oxford_bikes/img1.png",
    SHARED_DATA / "homography/oxford_bikes/img3.png",
]


def best_of(fn, repeats: int) -> tuple[float, object]:
    """Minimum wall time of `repeats` calls after one warm-up call, and the last result."""
    fn()
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out
