"""pycolmap (COLMAP ≥ 3.12 / 4.x API) backend: LO-RANSAC estimators of COLMAP.

Relative pose: `estimate_relative_pose` (tangent Sampson error) followed by
`refine_relative_pose` on its inliers, or `method="essential"` for `estimate_essential_matrix`.
COLMAP returns `cam2_from_cam1`, i.e. exactly our X1 = R X0 + t; its rotation matrix comes from
`Rigid3d.rotation.matrix()` so the xyzw quaternion order never has to be handled here.
"""

from __future__ import annotations

import numpy as np
import pycolmap

from ..config import unknown_name
from ..errors import EstimatorError


def _options(threshold: float, options: dict | None) -> pycolmap.RANSACOptions:
    opts = pycolmap.RANSACOptions()
    opts.max_error = float(threshold)
    for k, v in (options or {}).items():
        if not hasattr(opts, k):
            raise EstimatorError(f"unknown pycolmap RANSAC option '{k}'")
        setattr(opts, k, v)
    return opts


def _camera(K: np.ndarray, p: np.ndarray) -> pycolmap.Camera:
    # Only differences to the principal point matter, so our pixel-centre origin needs no shift
    w = int(max(2 * K[0, 2], p[:, 0].max() + 1, 1))
    h = int(max(2 * K[1, 2], p[:, 1].max() + 1, 1))
    return pycolmap.Camera(
        model="PINHOLE", width=w, height=h, params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]]
    )


def homography(p0, p1, threshold, ransac: dict | None = None):
    out = pycolmap.estimate_homography_matrix(p0, p1, _options(threshold, ransac))
    if out is None:
        return None, None
    return np.asarray(out["H"]), np.asarray(out["inlier_mask"], bool).ravel()


def fundamental(p0, p1, threshold, ransac: dict | None = None):
    out = pycolmap.estimate_fundamental_matrix(p0, p1, _options(threshold, ransac))
    if out is None:
        return None, None
    return np.asarray(out["F"]), np.asarray(out["inlier_mask"], bool).ravel()


def relative_pose(
    p0,
    p1,
    K0,
    K1,
    threshold,
    method: str = "relative_pose",
    refine: bool = True,
    ransac: dict | None = None,
):
    cam0, cam1 = _camera(K0, p0), _camera(K1, p1)
    opts = _options(threshold, ransac)
    if method == "relative_pose":
        out = pycolmap.estimate_relative_pose(cam0, p0, cam1, p1, opts)
    elif method == "essential":
        out = pycolmap.estimate_essential_matrix(p0, p1, cam0, cam1, opts)
    else:
        raise unknown_name(
            "pycolmap method", method, ("relative_pose", "essential"), EstimatorError
        )
    if out is None:
        return None, None, None
    pose, inliers = out["cam2_from_cam1"], np.asarray(out["inlier_mask"], bool).ravel()
    if refine and inliers.sum() >= 5:
        ref = pycolmap.refine_relative_pose(pose, cam0, p0, cam1, p1, inliers)
        if ref is not None:
            pose = ref["cam2_from_cam1"] if isinstance(ref, dict) else ref
    return np.asarray(pose.rotation.matrix()), np.asarray(pose.translation), inliers
