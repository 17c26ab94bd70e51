"""Shared fixtures: the shared data folder, official weights placed in the cache once per session,
and the opencv-doc photographs the CPU training demonstrations train on.

Whether a test can run is decided here and in `helpers.unavailable` only: a missing data folder or
weight file skips the test locally and fails it when CI is set.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

# spinning OpenMP threads multiply test time on a busy 2-core machine
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch
from helpers import require, unavailable

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


OPENCV_DOC = Path("usr/share/doc/opencv-doc/examples/data")


@pytest.fixture(scope="session")
def opencv_doc_images(tmp_path_factory) -> Path:
    """The opencv-doc sample photographs: unpacked where $TIEPOINT_OPENCV_DOC says (the folder
    `dpkg-deb -x` wrote into), else fetched with apt-get download into a temporary folder."""
    if os.environ.get("TIEPOINT_OPENCV_DOC"):
        return require(Path(os.environ["TIEPOINT_OPENCV_DOC"]) / OPENCV_DOC, "opencv-doc images")
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        unavailable("opencv-doc images need apt-get and dpkg-deb (or set TIEPOINT_OPENCV_DOC)")
    tmp = tmp_path_factory.mktemp("opencv_doc")
    dl = tmp / "deb"
    dl.mkdir()
    r = subprocess.run(
        ["apt-get", "download", "opencv-doc"], cwd=dl, capture_output=True, text=True
    )
    if r.returncode and os.geteuid() == 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
        r = subprocess.run(
            ["apt-get", "download", "opencv-doc"], cwd=dl, capture_output=True, text=True
        )
    debs = list(dl.glob("opencv-doc_*.deb"))
    if r.returncode or not debs:
        unavailable(f"cannot download opencv-doc: {r.stderr.strip()[:200]}")
    subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(tmp / "ocvdoc")], check=True)
    return require(tmp / "ocvdoc" / OPENCV_DOC, "opencv-doc images")


@pytest.fixture(scope="session")
def opencv_doc_videos(opencv_doc_images) -> Path:
    """The opencv-doc sample videos (vtest.avi: static camera, 10 fps; Megamind.avi: 23.976 fps),
    in the same unpacked folder as its photographs."""
    require(opencv_doc_images / "vtest.avi", "opencv-doc videos")
    return opencv_doc_images
