"""ScanNet-1500 (relative pose, indoor), in the `scannet1500.zip` layout of Glue Factory:

    scannet1500/pairs_calibrated.txt   name0 name1 K0(9) K1(9) T_0to1(16)   (or R(9) t(3))
    scannet1500/<name>                 640x480 colour frames

Same metrics as MegaDepth-1500; images are used at their native 640x480.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ...errors import DatasetError
from ..download import Resource
from . import POSE, Benchmark, Pair, check_intrinsics, check_pose, parse_floats, read_manifest


def parse_calibrated_pair(src: str, f: list[str]):
    """`name0 name1 K0(9) K1(9) T(16 | 12)` → (K0, K1, T_0to1)."""
    v = parse_floats(f[2:], src, "intrinsics/pose")
    K0 = check_intrinsics(v[0:9].reshape(3, 3), src, "K0")
    K1 = check_intrinsics(v[9:18].reshape(3, 3), src, "K1")
    if len(v) == 34:
        T = v[18:34].reshape(4, 4)
    else:
        T = np.eye(4)
        T[:3, :3], T[:3, 3] = v[18:27].reshape(3, 3), v[27:30]
    return K0, K1, check_pose(T, src)


class ScanNet1500(Benchmark):
    name = "scannet1500"
    tasks = (POSE,)
    resource = Resource(
        url="https://cvg-data.inf.ethz.ch/scannet/scannet1500.zip",
        filename="scannet1500.zip",
        folder="scannet1500",
    )
    data_conf = {"resize": None, "side": "long", "pairs_file": "pairs_calibrated.txt"}
    eval_conf = {
        "estimator": "opencv",
        "ransac_th": 1.0,
        "options": {},
    }  # Glue Factory's ScanNet-1500 default
    auc_thresholds = {POSE: (5, 10, 20)}

    def _read_pairs(self) -> Iterator[Pair]:
        path = self.root / self.conf.pairs_file
        if not path.is_file():
            raise DatasetError(f"scannet1500: {path} not found ({self.missing_message()})")
        for src, f in read_manifest(path, (32, 36)):
            K0, K1, T = parse_calibrated_pair(src, f)
            yield Pair(
                f"{f[0]} {f[1]}",
                self.root / f[0],
                self.root / f[1],
                group=f[0].split("/")[0] if "/" in f[0] else "",
                K0=K0,
                K1=K1,
                T_0to1=T,
                source=src,
            )
