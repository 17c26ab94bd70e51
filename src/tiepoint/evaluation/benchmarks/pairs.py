"""Generic pairs: a homography manifest and/or a relative-pose manifest, no download needed.

Layout (docs/datasets.md; the folder is `--data-root`/`data.root`, else $TIEPOINT_DATA/pairs):
    <root>/homography/pairs.txt   img0 img1 h00 h01 h02 h10 h11 h12 h20 h21 h22
    <root>/pose/pairs.txt         img0 img1 fx0 fy0 cx0 cy0 fx1 fy1 cx1 cy1 r00 … r22 t0 t1 t2
Image paths are relative to the manifest's folder; H maps img0 pixels to img1 pixels; the pose
maps camera 0 to camera 1 (X1 = R X0 + t). Metrics are computed in original-image pixels.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..download import data_root
from . import (
    HOMOGRAPHY,
    POSE,
    Benchmark,
    Pair,
    check_homography,
    check_intrinsics,
    check_pose,
    parse_floats,
    read_manifest,
)

MANIFESTS = {HOMOGRAPHY: "homography/pairs.txt", POSE: "pose/pairs.txt"}


def _group(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else ""


def read_homography_pairs(path: Path) -> Iterator[Pair]:
    for src, f in read_manifest(path, 11):
        H = check_homography(parse_floats(f[2:11], src, "H").reshape(3, 3), src)
        yield Pair(
            f"{HOMOGRAPHY}/{f[0]} {f[1]}",
            path.parent / f[0],
            path.parent / f[1],
            group=_group(f[0]),
            H_0to1=H,
            source=src,
        )


def read_pose_pairs(path: Path) -> Iterator[Pair]:
    for src, f in read_manifest(path, 22):
        v = parse_floats(f[2:22], src, "intrinsics/pose")
        K = []
        for i, (fx, fy, cx, cy) in enumerate((v[0:4], v[4:8])):
            K.append(
                check_intrinsics(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]]), src, f"K{i}")
            )
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = v[8:17].reshape(3, 3), v[17:20]
        yield Pair(
            f"pose/{f[0]} {f[1]}",
            path.parent / f[0],
            path.parent / f[1],
            group=_group(f[0]),
            K0=K[0],
            K1=K[1],
            T_0to1=check_pose(T, src),
            source=src,
        )


class PairsBenchmark(Benchmark):
    name = "pairs"
    tasks = (HOMOGRAPHY, POSE)
    data_conf = {"resize": 1024, "side": "long", "tasks": [HOMOGRAPHY, POSE]}
    eval_conf = {
        "estimator": "opencv",
        "ransac_th": None,
        "options": {},
    }  # estimator defaults: 3 px (H), 0.5 px (pose)
    auc_thresholds = {HOMOGRAPHY: (3, 5, 10), POSE: (5, 10, 20)}
    group_summaries = True

    @property
    def root(self) -> Path:
        # no guessing beyond $TIEPOINT_DATA/pairs: a folder picked by accident gives wrong numbers
        return Path(self.conf.root) if self.conf.root else data_root() / "pairs"

    def missing_message(self) -> str:
        if self.conf.root:
            problem = f"dataset folder {self.root} not found"
        else:
            problem = f"no data root given and {self.root} ($TIEPOINT_DATA/pairs) does not exist"
        return (
            f"pairs: {problem}; pass --data-root DIR (or data.root=DIR), a folder with "
            f"{MANIFESTS[HOMOGRAPHY]} and/or {MANIFESTS[POSE]} (docs/datasets.md)"
        )

    def _read_pairs(self) -> Iterator[Pair]:
        unknown = set(self.conf.tasks) - set(MANIFESTS)
        if unknown:
            from ...errors import ConfigError

            raise ConfigError(
                f"data.tasks: unknown task(s) {sorted(unknown)}; valid: {list(MANIFESTS)}"
            )
        found = False
        for task in self.conf.tasks:
            path = self.root / MANIFESTS[task]
            if not path.exists():
                continue
            found = True
            yield from (
                read_homography_pairs(path) if task == HOMOGRAPHY else read_pose_pairs(path)
            )
        if not found:
            from ...errors import DatasetError

            raise DatasetError(
                f"pairs: none of {', '.join(MANIFESTS[t] for t in self.conf.tasks)} "
                f"found under {self.root}"
            )
