"""Shared fixtures: the shared data folder and official weights placed in the cache once per session.

Whether a test can run is decided here and in `helpers.unavailable` only: a missing data folder or
weight file skips the test locally and fails it when CI is set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# spinning OpenMP threads multiply test time on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
from helpers import unavailable

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TIEPOINT_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """../shared/data (or $TIEPOINT_SHARED/data)."""
    if not DATA.is_dir():
        unavailable(f"shared data not found at {DATA} (set TIEPOINT_SHARED)")
    return DATA


def ensure_weights(*names: str) -> None:
    """Official weights in the cache: already there, or fetched by the library's own resolver."""
    from tiepoint import weights
    from tiepoint.errors import WeightsError

    for name in names:
        if weights.is_cached(name):
            continue
        try:
            weights.resolve(name)
        except WeightsError as e:
            unavailable(f"official weights '{name}' unavailable: {e}")


@pytest.fixture(scope="session")
def official_weights():
    """Call with weight names; each one is made available or the test is skipped (failed in CI)."""
    return ensure_weights
