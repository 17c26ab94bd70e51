"""Fixtures for reconstruction tests: real KITTI frames copied into throw-away folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from tiepoint.reconstruction.colmap import MapperOptions
from tiepoint.reconstruction.pipeline import Options

KITTI_PARAMS = "707.0912,707.0912,601.8873,183.1104"  # P0 of calib.txt, checked in a test below


@pytest.fixture(scope="session")
def kitti_dir(data_dir) -> Path:
    return data_dir / "pose" / "kitti_seq1"


def copy_frames(src: Path, dst: Path, names: list[str], rename=None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for n in names:
        target = dst / (rename(n) if rename else n)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / n, target)
    return dst


def kitti_frames(kitti_dir: Path, step: int = 1, count: int | None = None) -> list[str]:
    names = sorted(p.name for p in kitti_dir.glob("*.png"))
    return names[::step][:count]


def sift_options(**kw) -> Options:
    """Fast options: SIFT + NN needs no weights; 1024 px and 2048 keypoints keep each step well
    under a second while leaving KITTI's forward-motion pairs enough matches to map."""
    mapper = kw.pop("mapper", None) or MapperOptions(
        camera_model="PINHOLE", camera_params=KITTI_PARAMS
    )
    base = {
        "pipeline": "sift+nn",
        "resize": 1024,
        "device": "cpu",
        "overrides": ["extractor.max_num_keypoints=2048"],
    }
    base.update(kw)
    return Options(mapper=mapper, **base)


def kitti_gt_centres(kitti_dir: Path) -> np.ndarray:
    """Camera centres of all frames: poses.txt rows are 3x4 camera-to-world matrices."""
    return np.loadtxt(kitti_dir / "poses.txt").reshape(-1, 3, 4)[:, :, 3]
