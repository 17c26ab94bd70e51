"""Benchmarks: each turns its dataset's on-disk format into a list of `Pair`s with ground truth.

A benchmark also fixes its protocol: image resizing, the resolution metrics are computed at,
AUC thresholds, statistics and default estimator. The runner does the rest identically for all.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import DictConfig

from ...config import import_object, lookup, merge_strict
from ...errors import DatasetError
from ...images import target_size
from ..download import Resource, data_root, where_to_put

HOMOGRAPHY, POSE = "homography", "relative_pose"

BENCHMARKS = {
    "pairs": "tiepoint.evaluation.benchmarks.pairs:PairsBenchmark",
    "hpatches": "tiepoint.evaluation.benchmarks.hpatches:HPatches",
    "megadepth1500": "tiepoint.evaluation.benchmarks.megadepth1500:MegaDepth1500",
    "scannet1500": "tiepoint.evaluation.benchmarks.scannet1500:ScanNet1500",
    "zeb": "tiepoint.evaluation.benchmarks.zeb:ZEB",
}


@dataclass
class Pair:
    """Two images and their ground truth: `H_0to1` (homography) or `K0, K1, T_0to1` (pose)."""

    name: str  # unique within the benchmark; key of the pair in predictions.h5 / results.h5
    image0: Path
    image1: Path
    group: str = ""  # sequence / scene / sub-dataset, for per-group summaries
    H_0to1: np.ndarray | None = None
    K0: np.ndarray | None = None
    K1: np.ndarray | None = None
    T_0to1: np.ndarray | None = None
    source: str = ""  # "file:line" where the pair was read, for error messages
    extra: dict = field(default_factory=dict)

    @property
    def task(self) -> str:
        return HOMOGRAPHY if self.H_0to1 is not None else POSE


class Benchmark:
    name = ""
    tasks: tuple[str, ...] = (HOMOGRAPHY,)
    resource: Resource | None = None
    base_data_conf = {"root": None, "resize": None, "side": "long", "max_pairs": None}
    data_conf: dict = {}
    eval_conf = {"estimator": "opencv", "ransac_th": None, "options": {}}
    # homography metrics at the resized resolution (HPatches protocol) or the original one
    eval_at_resized = False
    auc_thresholds = {HOMOGRAPHY: (1, 3, 5), POSE: (5, 10, 20)}
    stat = {HOMOGRAPHY: "median", POSE: "mean"}
    group_summaries = False
    # `data.protocol` values besides null (the benchmark's own) → their data defaults; the user's
    # data settings still win. "dkm": DKM's evaluation (evaluation/dkm_protocol.py), on images
    # loaded at full size (a dense model resizes them itself)
    protocols: dict[str, dict] = {}
    dkm_auc_thresholds: tuple = ()

    def __init__(self, conf: dict | DictConfig | None = None):
        where = f"data ({self.name})"
        base = {**self.base_data_conf, **self.data_conf}
        self.conf = merge_strict(base, conf, where=where)
        protocol = self.conf.get("protocol")
        if protocol is not None:
            if protocol not in self.protocols:
                valid = ", ".join(["null", *self.protocols])
                raise DatasetError(f"{where}: unknown protocol '{protocol}'; valid: {valid}")
            self.conf = merge_strict({**base, **self.protocols[protocol]}, conf, where=where)

    # ---- where the data is
    @property
    def root(self) -> Path:
        if self.conf.root:
            return Path(self.conf.root)
        return data_root() / (self.resource.folder if self.resource else self.name)

    def missing_message(self) -> str:
        msg = f"{self.name}: dataset folder {self.root} not found"
        if self.resource is not None:
            where = where_to_put(self.resource, self.root.parent)
            auto = f"run `tiepoint download {self.name}` or " if self.resource.url else ""
            return f"{msg}; {auto}{where}"
        return msg + " (set data.root)"

    def check_root(self) -> None:
        if not self.root.is_dir():
            raise DatasetError(self.missing_message())

    # ---- pairs
    def load_pairs(self) -> list[Pair]:
        """All pairs, with their images checked to exist (a missing image names its pair)."""
        self.check_root()
        pairs = list(self._read_pairs())
        if not pairs:
            raise DatasetError(f"{self.name}: no pairs found under {self.root}")
        if self.conf.max_pairs:
            pairs = pairs[: int(self.conf.max_pairs)]
        names = set()
        for p in pairs:
            if p.name in names:
                raise DatasetError(f"{p.source or self.name}: duplicate pair {p.name}")
            names.add(p.name)
            for im in (p.image0, p.image1):
                if not Path(im).is_file():
                    raise DatasetError(
                        f"{p.source or self.name}: image {im} of pair {p.name} not found"
                    )
        return pairs

    def _read_pairs(self) -> Iterator[Pair]:
        raise NotImplementedError

    # ---- protocol
    def scale(self, size) -> np.ndarray:
        """Original → network-input scale (sx, sy) of an image of size (W, H)."""
        w, h = target_size(tuple(int(x) for x in size), self.conf.resize, self.conf.side)
        return np.array([w / size[0], h / size[1]], np.float64)


def read_manifest(path: Path, num_fields: int | tuple[int, ...]) -> Iterator[tuple[str, list[str]]]:
    """Yield ("file:line", fields) of a whitespace-separated text file; `#` starts a comment line.

    A line with a wrong number of fields is an error naming the file and line number.
    """
    counts = (num_fields,) if isinstance(num_fields, int) else num_fields
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        raise DatasetError(f"{path}: pairs file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"{path}: cannot read pairs file ({e})") from None
    for i, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) not in counts:
            want = " or ".join(map(str, counts))
            raise DatasetError(f"{path}:{i}: expected {want} fields, got {len(fields)}")
        yield f"{path}:{i}", fields


def parse_floats(tokens: list[str], source: str, what: str) -> np.ndarray:
    try:
        values = np.array([float(t) for t in tokens], np.float64)
    except ValueError:
        bad = next(t for t in tokens if not _is_float(t))
        raise DatasetError(f"{source}: '{bad}' in {what} is not a number") from None
    if not np.isfinite(values).all():
        raise DatasetError(f"{source}: {what} contains NaN or infinite values")
    return values


def _is_float(t: str) -> bool:
    try:
        float(t)
        return True
    except ValueError:
        return False


def check_intrinsics(K: np.ndarray, source: str, what: str) -> np.ndarray:
    if K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
        raise DatasetError(
            f"{source}: {what} is not an intrinsic matrix (positive focals, last row 0 0 1)"
        )
    return K


def check_homography(H: np.ndarray, source: str) -> np.ndarray:
    if abs(np.linalg.det(H)) < 1e-12:
        raise DatasetError(f"{source}: homography is singular")
    return H


def check_pose(T: np.ndarray, source: str) -> np.ndarray:
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        raise DatasetError(f"{source}: T_0to1 rotation block is not a rotation matrix")
    return T


def get_benchmark(name: str, conf=None) -> Benchmark:
    return import_object(lookup(BENCHMARKS, name, "benchmark", DatasetError))(conf)
