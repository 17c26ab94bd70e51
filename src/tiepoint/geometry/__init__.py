"""Geometry: homographies, epipolar geometry, poses and their error measures.

Everything here is plain math on numpy arrays (float64), in our pixel convention (pixel centres
at integer coordinates). Ground-truth correspondences and depth live in `gt.py` / `depth.py`.
"""

from .epipolar import essential_from_pose, fundamental_from_pose, sym_epipolar_distance
from .homography import (
    fit_homography_dlt,
    homography_corner_error,
    scale_homography,
    sym_homography_error,
    warp_points,
)
from .pose import angle_error_rotation, angle_error_vector, relative_pose_error, scale_intrinsics

__all__ = [
    "angle_error_rotation",
    "angle_error_vector",
    "essential_from_pose",
    "fit_homography_dlt",
    "fundamental_from_pose",
    "homography_corner_error",
    "relative_pose_error",
    "scale_homography",
    "scale_intrinsics",
    "sym_epipolar_distance",
    "sym_homography_error",
    "warp_points",
]
