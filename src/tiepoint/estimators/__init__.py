"""Robust estimators behind one interface: homographies, fundamental matrices, relative poses.

The benchmark numbers of a matcher move by ~15 AUC points with the estimator, so the estimator
is always an explicit, named choice (`opencv`, `poselib`, `pycolmap`) with a documented default
inlier threshold in pixels. Backends are imported lazily: poselib and pycolmap are optional.

Conventions: `p0`, `p1` are (K, 2) pixel coordinates of matched points (pixel centres at integer
coordinates); the homography maps p0 → p1; the fundamental matrix satisfies `x1ᵀ F x0 = 0` (returned with unit Frobenius norm); the pose maps camera 0 to camera 1, `X1 = R X0 + t`,
with `t` of unit norm. Too few points or a RANSAC failure is *not* an exception: the estimate has
`H`/`R` None and all-False inliers, so a benchmark counts it as a failure.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

import numpy as np

from ..config import lookup
from ..errors import EstimatorError

ESTIMATORS = ("opencv", "poselib", "pycolmap")
# homographies only: points and matched line segments in one robust fit (ours, `point_line.py`)
POINT_LINE = "point_line"
POINT_LINE_THRESHOLD = 3.0  # px, points and lines; as OpenCV's homography default

# Inlier thresholds in pixels, as in Glue Factory's estimators (pycolmap H: COLMAP's max_error).
DEFAULT_THRESHOLDS = {
    "homography": {"opencv": 3.0, "poselib": 2.0, "pycolmap": 4.0},
    "relative_pose": {"opencv": 0.5, "poselib": 2.0, "pycolmap": 4.0},
    # GIM's demo value (GIM:demo.py); its video labels use 0.5 px, its propagation 1 px
    "fundamental": {"opencv": 1.0, "poselib": 1.0, "pycolmap": 1.0},
}
MIN_POINTS = {"homography": 4, "relative_pose": 5, "fundamental": 8}


@dataclass
class HomographyEstimate:
    H: np.ndarray | None  # (3, 3) float64 mapping image 0 → image 1, None on failure
    inliers: np.ndarray  # (K,) bool
    line_inliers: np.ndarray | None = None  # (L,) bool, from `point_line` with matched lines

    @property
    def success(self) -> bool:
        return self.H is not None

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass
class FundamentalEstimate:
    F: np.ndarray | None  # (3, 3) float64, x1ᵀ F x0 = 0, unit Frobenius norm; None on failure
    inliers: np.ndarray  # (K,) bool

    @property
    def success(self) -> bool:
        return self.F is not None

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


@dataclass
class PoseEstimate:
    R: np.ndarray | None  # (3, 3) rotation camera 0 → camera 1, None on failure
    t: np.ndarray | None  # (3,) unit translation direction
    inliers: np.ndarray  # (K,) bool

    @property
    def success(self) -> bool:
        return self.R is not None

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def _backend(estimator: str, homography: bool = False):
    if estimator == POINT_LINE:
        if not homography:
            raise EstimatorError(f"estimator '{POINT_LINE}' only estimates homographies")
        from . import point_line

        return point_line
    lookup(ESTIMATORS, estimator, "estimator", EstimatorError)
    try:
        return importlib.import_module(f"{__name__}.{estimator}")
    except ImportError as e:
        raise EstimatorError(
            f"estimator '{estimator}' needs a package that is not installed ({e.name}); "
            "install it with: pip install 'tiepoint[estimators]'"
        ) from None


def _points(p, name: str) -> np.ndarray:
    p = np.asarray(p.detach().cpu() if hasattr(p, "detach") else p, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 2:
        raise EstimatorError(
            f"{name} must be a (K, 2) array of pixel coordinates, got shape {p.shape}"
        )
    if not np.isfinite(p).all():
        raise EstimatorError(f"{name} contains NaN or infinite coordinates")
    return np.ascontiguousarray(p)


def _intrinsics(K, name: str) -> np.ndarray:
    K = np.asarray(K.detach().cpu() if hasattr(K, "detach") else K, dtype=np.float64)
    if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
        raise EstimatorError(f"{name} must be a finite 3x3 intrinsic matrix with positive focals")
    return K


def resolve_threshold(task: str, estimator: str, threshold: float | None) -> float:
    if threshold is None:
        return DEFAULT_THRESHOLDS[task][estimator]
    threshold = float(threshold)
    if not threshold > 0:
        raise EstimatorError(
            f"RANSAC threshold must be > 0 pixels, got {threshold} "
            "(-1 is the benchmark runner's sweep, not an estimator threshold)"
        )
    return threshold


def _check_pair(p0, p1) -> tuple[np.ndarray, np.ndarray]:
    p0, p1 = _points(p0, "p0"), _points(p1, "p1")
    if len(p0) != len(p1):
        raise EstimatorError(f"p0 and p1 must have the same length, got {len(p0)} and {len(p1)}")
    return p0, p1


def _check_lines(lines0, lines1) -> tuple[np.ndarray, np.ndarray]:
    out = []
    for name, ln in (("lines0", lines0), ("lines1", lines1)):
        ln = np.asarray(ln.detach().cpu() if hasattr(ln, "detach") else ln, np.float64)
        if ln.ndim != 3 or ln.shape[1:] != (2, 2) or not np.isfinite(ln).all():
            raise EstimatorError(
                f"{name} must be a finite (L, 2, 2) array of segments, got {ln.shape}"
            )
        out.append(ln)
    if len(out[0]) != len(out[1]):
        raise EstimatorError(
            f"lines0 and lines1 must match one to one: {len(out[0])} vs {len(out[1])}"
        )
    return out[0], out[1]


def estimate_homography(
    p0,
    p1,
    estimator: str = "opencv",
    threshold: float | None = None,
    lines0=None,
    lines1=None,
    **options,
) -> HomographyEstimate:
    """Robust homography H with p1 ~ H p0; `threshold` is the reprojection error in pixels.

    Matched line segments `lines0[i]` ↔ `lines1[i]` ((L,2,2) end points) join the fit with the
    `point_line` estimator (`line_threshold` in pixels, default `threshold`); then 4 points and
    lines together suffice and `line_inliers` is set.
    """
    with_lines = lines0 is not None or lines1 is not None
    if with_lines and estimator != POINT_LINE:
        raise EstimatorError(f"estimator '{estimator}' takes no lines; use estimator='point_line'")
    backend = _backend(estimator, homography=True)
    if estimator == POINT_LINE:
        th = resolve_threshold("homography", "opencv", threshold or POINT_LINE_THRESHOLD)
    else:
        th = resolve_threshold("homography", estimator, threshold)
    p0, p1 = _check_pair(p0, p1)
    n_lines = 0
    if with_lines:
        lines0, lines1 = _check_lines(
            np.zeros((0, 2, 2)) if lines0 is None else lines0,
            np.zeros((0, 2, 2)) if lines1 is None else lines1,
        )
        n_lines = len(lines0)
        options.update(lines0=lines0, lines1=lines1, return_line_inliers=True)
    failure = HomographyEstimate(
        None, np.zeros(len(p0), bool), np.zeros(n_lines, bool) if with_lines else None
    )
    if len(p0) + n_lines < MIN_POINTS["homography"]:
        return failure
    H, inliers, *line_inliers = backend.homography(p0, p1, th, **options)
    if H is None:
        return failure
    H = np.asarray(H, np.float64)
    if not np.isfinite(H).all() or np.abs(H).max() == 0:
        return failure
    if abs(H[2, 2]) > 1e-12:
        H = H / H[2, 2]
    line_in = np.asarray(line_inliers[0], bool) if line_inliers else None
    return HomographyEstimate(H, np.asarray(inliers, bool).reshape(-1), line_in)


def estimate_fundamental(
    p0, p1, estimator: str = "opencv", threshold: float | None = None, **options
) -> FundamentalEstimate:
    """Robust fundamental matrix with x1ᵀ F x0 = 0; `threshold` is the epipolar error in pixels.

    OpenCV defaults to MAGSAC++ (`method="usac_magsac"`, confidence 0.999999, 10000 iterations)
    as GIM's demo and video labelling do. F is rank 2 and scaled to unit Frobenius norm.
    """
    backend = _backend(estimator)
    th = resolve_threshold("fundamental", estimator, threshold)
    p0, p1 = _check_pair(p0, p1)
    failure = FundamentalEstimate(None, np.zeros(len(p0), bool))
    if len(p0) < MIN_POINTS["fundamental"]:
        return failure
    F, inliers = backend.fundamental(p0, p1, th, **options)
    if F is None:
        return failure
    F = np.asarray(F, np.float64)
    norm = np.linalg.norm(F)
    if F.shape != (3, 3) or not np.isfinite(F).all() or norm < 1e-12:
        return failure
    return FundamentalEstimate(F / norm, np.asarray(inliers, bool).reshape(-1))


def estimate_relative_pose(
    p0, p1, K0, K1, estimator: str = "opencv", threshold: float | None = None, **options
) -> PoseEstimate:
    """Robust calibrated relative pose (R, unit t) with X1 = R X0 + t; `threshold` in pixels."""
    backend = _backend(estimator)
    th = resolve_threshold("relative_pose", estimator, threshold)
    p0, p1 = _check_pair(p0, p1)
    K0, K1 = _intrinsics(K0, "K0"), _intrinsics(K1, "K1")
    failure = PoseEstimate(None, None, np.zeros(len(p0), bool))
    if len(p0) < MIN_POINTS["relative_pose"]:
        return failure
    R, t, inliers = backend.relative_pose(p0, p1, K0, K1, th, **options)
    if R is None or t is None or not (np.isfinite(R).all() and np.isfinite(t).all()):
        return failure
    t = np.asarray(t, np.float64).reshape(3)
    norm = np.linalg.norm(t)
    if norm < 1e-12:
        return failure
    return PoseEstimate(np.asarray(R, np.float64), t / norm, np.asarray(inliers, bool).reshape(-1))


def mean_focal(K0: np.ndarray, K1: np.ndarray) -> float:
    return float(np.mean([K0[0, 0], K0[1, 1], K1[0, 0], K1[1, 1]]))


__all__ = [
    "DEFAULT_THRESHOLDS",
    "ESTIMATORS",
    "FundamentalEstimate",
    "HomographyEstimate",
    "POINT_LINE",
    "PoseEstimate",
    "estimate_fundamental",
    "estimate_homography",
    "estimate_relative_pose",
]
