"""PoseLib backend: LO-RANSAC with a final bundle refinement (usually the most accurate)."""

from __future__ import annotations

import numpy as np
import poselib


def _camera(K: np.ndarray) -> dict:
    # poselib only uses the intrinsics; the pixel-origin convention cancels out for p and K alike
    return {
        "model": "PINHOLE",
        "width": 0,
        "height": 0,
        "params": [K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
    }


def homography(p0, p1, threshold, ransac: dict | None = None, bundle: dict | None = None):
    H, info = poselib.estimate_homography(
        p0, p1, {"max_reproj_error": float(threshold), **(ransac or {})}, dict(bundle or {})
    )
    if H is None or not info.get("inliers"):
        return None, None
    return np.asarray(H), np.asarray(info["inliers"], bool)


def fundamental(p0, p1, threshold, ransac: dict | None = None, bundle: dict | None = None):
    F, info = poselib.estimate_fundamental(
        p0, p1, {"max_epipolar_error": float(threshold), **(ransac or {})}, dict(bundle or {})
    )
    if F is None or not info.get("inliers") or info.get("num_inliers", 0) < 8:
        return None, None
    return np.asarray(F), np.asarray(info["inliers"], bool)


def relative_pose(
    p0, p1, K0, K1, threshold, ransac: dict | None = None, bundle: dict | None = None
):
    pose, info = poselib.estimate_relative_pose(
        p0,
        p1,
        _camera(K0),
        _camera(K1),
        {"max_epipolar_error": float(threshold), **(ransac or {})},
        dict(bundle or {}),
    )
    if pose is None or not info.get("inliers") or info.get("num_inliers", 0) < 5:
        return None, None, None
    return np.asarray(pose.R), np.asarray(pose.t), np.asarray(info["inliers"], bool)
