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
    "warp_points",
    "homography_corner_error",
    "sym_homography_error",
    "scale_homography",
    "fit_homography_dlt",
    "essential_from_pose",
    "fundamental_from_pose",
    "sym_epipolar_distance",
    "angle_error_rotation",
    "angle_error_vector",
    "relative_pose_error",
    "scale_intrinsics",
]
