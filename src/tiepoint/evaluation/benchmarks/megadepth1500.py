"""MegaDepth-1500 (relative pose), in Glue Factory's `megadepth1500.zip` layout:

    megadepth1500/images/<name>    the 1500-pair test split of LoFTR (scenes 0015 and 0022)
    megadepth1500/views.txt        name R(9) t(3) MODEL width height params…  (world→camera, COLMAP)
    megadepth1500/pairs.txt        name0 name1

Protocol: images resized to 1600 px on the long side; poses estimated from keypoints in original
pixels; `rel_pose_error` = max(R, t) angle; AUC@5/10/20°; epipolar precision in normalised
coordinates. COLMAP's principal point (pixel corners at integers) is shifted by −0.5 into our
convention at load time.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ...errors import DatasetError
from ..download import Resource
from . import POSE, Benchmark, Pair, check_pose, parse_floats, read_manifest

PINHOLE_PARAMS = {"SIMPLE_PINHOLE": 3, "PINHOLE": 4, "SIMPLE_RADIAL": 4, "RADIAL": 5, "OPENCV": 8}


def colmap_K(model: str, params: np.ndarray, source: str) -> np.ndarray:
    """Pinhole part of a COLMAP camera, converted to pixel-centre coordinates."""
    if model not in PINHOLE_PARAMS:
        raise DatasetError(
            f"{source}: unsupported camera model {model}; valid: {', '.join(PINHOLE_PARAMS)}"
        )
    if len(params) != PINHOLE_PARAMS[model]:
        raise DatasetError(
            f"{source}: camera {model} needs {PINHOLE_PARAMS[model]} parameters, got {len(params)}"
        )
    if model in ("SIMPLE_PINHOLE", "SIMPLE_RADIAL", "RADIAL"):
        fx = fy = params[0]
        cx, cy = params[1:3]
    else:
        fx, fy, cx, cy = params[:4]
    if fx <= 0 or fy <= 0:
        raise DatasetError(f"{source}: non-positive focal length")
    return np.array([[fx, 0, cx - 0.5], [0, fy, cy - 0.5], [0, 0, 1.0]])


def read_views(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (K, T_world_to_cam 4x4)."""
    views = {}
    for src, f in read_manifest(path, tuple(range(17, 26))):
        name, model = f[0], f[13]
        rt = parse_floats(f[1:13], src, "R, t")
        parse_floats(f[14:16], src, "width, height")
        K = colmap_K(model, parse_floats(f[16:], src, "camera parameters"), src)
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = rt[:9].reshape(3, 3), rt[9:12]
        views[name] = (K, check_pose(T, src))
    return views


class MegaDepth1500(Benchmark):
    name = "megadepth1500"
    tasks = (POSE,)
    resource = Resource(
        url="https://cvg-data.inf.ethz.ch/megadepth/megadepth1500.zip",
        filename="megadepth1500.zip",
        folder="megadepth1500",
    )
    data_conf = {"resize": 1600, "side": "long", "protocol": None}  # dkm: DKM's protocol
    protocols = {"dkm": {"resize": None}}
    dkm_auc_thresholds = (5, 10, 20)
    eval_conf = {
        "estimator": "opencv",
        "ransac_th": 0.5,
        "options": {},
    }  # Glue Factory's official configs
    auc_thresholds = {POSE: (5, 10, 20)}

    def _read_pairs(self) -> Iterator[Pair]:
        views_file, pairs_file = self.root / "views.txt", self.root / "pairs.txt"
        for f in (views_file, pairs_file):
            if not f.is_file():
                raise DatasetError(f"megadepth1500: {f} not found ({self.missing_message()})")
        views = read_views(views_file)
        for src, (n0, n1) in read_manifest(pairs_file, 2):
            for n in (n0, n1):
                if n not in views:
                    raise DatasetError(f"{src}: image {n} has no entry in {views_file}")
            (K0, T0), (K1, T1) = views[n0], views[n1]
            yield Pair(
                f"{n0} {n1}",
                self.root / "images" / n0,
                self.root / "images" / n1,
                group=n0.split("/")[0] if "/" in n0 else "",
                K0=K0,
                K1=K1,
                T_0to1=T1 @ np.linalg.inv(T0),
                source=src,
            )
