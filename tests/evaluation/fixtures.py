"""Tiny datasets written by the tests in each benchmark's exact on-disk format."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from helpers import rotation, save, texture

__all__ = [
    "fmt",
    "homographies",
    "plane_pose_pair",
    "save",
    "texture",
    "warp",
    "write_pairs_dataset",
]


def homographies():
    """Mild, known warps (pixel-centre convention)."""
    return [
        np.array([[1.0, 0.02, 6.0], [-0.02, 1.0, 4.0], [0.0, 0.0, 1.0]]),
        np.array([[0.95, 0.05, 10.0], [-0.04, 1.02, -3.0], [1e-4, -5e-5, 1.0]]),
        np.array([[1.05, 0.0, -5.0], [0.0, 1.05, -4.0], [0.0, 0.0, 1.0]]),
    ]


def warp(img: np.ndarray, H: np.ndarray) -> np.ndarray:
    return cv2.warpPerspective(
        img, H, (img.shape[1], img.shape[0]), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


def fmt(a) -> str:
    return " ".join(repr(float(x)) for x in np.asarray(a).ravel())


def plane_pose_pair(K, deg=3.0, t=(0.1, 0.0, 0.0), depth=5.0):
    """(R, t, H) for a fronto-parallel plane at `depth` in camera 0: H = K (R − t nᵀ/d) K⁻¹."""
    R, t = rotation(ry=deg), np.asarray(t, float)
    n = np.array([0, 0, 1.0])
    H = (
        K @ (R + np.outer(t, n) / depth) @ np.linalg.inv(K)
    )  # plane nᵀX = d  →  X1 = (R + t nᵀ/d) X0
    return R, t, H / H[2, 2]


def write_pairs_dataset(root: Path, n_h: int = 3, n_pose: int = 2) -> dict:
    """`homography/pairs.txt` + `pose/pairs.txt` in the shared-data format, with exact GT."""
    gt = {"H": [], "pose": []}
    lines = ["# img0 img1 H (row-major)"]
    for i, H in enumerate(homographies()[:n_h]):
        img = texture(seed=i)
        save(root / "homography" / f"seq{i}" / "a.png", img)
        save(root / "homography" / f"seq{i}" / "b.png", warp(img, H))
        lines.append(f"seq{i}/a.png seq{i}/b.png {fmt(H)}")
        gt["H"].append(H)
    (root / "homography" / "pairs.txt").write_text("\n".join(lines) + "\n")
    K = np.array([[200.0, 0, 119.5], [0, 200.0, 89.5], [0, 0, 1]])
    lines = []
    for i in range(n_pose):
        R, t, H = plane_pose_pair(K, deg=2.0 + i, t=(0.15, 0.02 * i, 0.05))
        img = texture(seed=10 + i)
        save(root / "pose" / "scene" / f"{i}_0.png", img)
        save(root / "pose" / "scene" / f"{i}_1.png", warp(img, H))
        k = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
        lines.append(f"scene/{i}_0.png scene/{i}_1.png {fmt(k)} {fmt(k)} {fmt(R)} {fmt(t)}")
        gt["pose"].append((K, R, t))
    (root / "pose").mkdir(parents=True, exist_ok=True)
    (root / "pose" / "pairs.txt").write_text("\n".join(lines) + "\n")
    return gt
