"""Relative pose errors and camera-intrinsics bookkeeping."""

from __future__ import annotations

import numpy as np


def angle_error_rotation(R_est: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle (degrees) of the rotation R_estᵀ R_gt."""
    cos = (np.trace(np.asarray(R_est).T @ np.asarray(R_gt)) - 1) / 2
    return float(np.rad2deg(np.arccos(np.clip(cos, -1.0, 1.0))))


def angle_error_vector(v_est: np.ndarray, v_gt: np.ndarray) -> float:
    """Angle (degrees) between two vectors; 0 if either has no direction."""
    n = np.linalg.norm(v_est) * np.linalg.norm(v_gt)
    if n < 1e-15:
        return 0.0
    return float(np.rad2deg(np.arccos(np.clip(np.dot(v_est, v_gt) / n, -1.0, 1.0))))


def relative_pose_error(
    T_0to1: np.ndarray, R: np.ndarray | None, t: np.ndarray | None, ignore_gt_t_thr: float = 0.0
) -> tuple[float, float]:
    """(rotation error, translation-direction error) in degrees; failures are (inf, inf).

    The translation error is min(e, 180 − e): an essential matrix fixes t only up to sign.
    With a GT baseline shorter than `ignore_gt_t_thr` (pure rotation), t is not scored.
    """
    if R is None or t is None:
        return float("inf"), float("inf")
    T_0to1 = np.asarray(T_0to1, np.float64)
    R_gt, t_gt = T_0to1[:3, :3], T_0to1[:3, 3]
    e_t = angle_error_vector(np.asarray(t, np.float64).ravel(), t_gt)
    e_t = min(e_t, 180.0 - e_t)
    if np.linalg.norm(t_gt) < ignore_gt_t_thr:
        e_t = 0.0
    return angle_error_rotation(R, R_gt), e_t


def scale_intrinsics(K: np.ndarray, scale) -> np.ndarray:
    """K for an image resized by (sx, sy) under the pixel-centre convention x' = (x+0.5)s − 0.5."""
    sx, sy = scale
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return S @ np.asarray(K, np.float64)


def pose_matrix(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, np.asarray(t).ravel()
    return T
