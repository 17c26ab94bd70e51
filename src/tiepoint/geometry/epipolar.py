"""Epipolar geometry from a relative pose, and the symmetric epipolar distance."""

from __future__ import annotations

import numpy as np

from .homography import to_homogeneous


def skew(v: np.ndarray) -> np.ndarray:
    x, y, z = np.asarray(v, np.float64).reshape(3)
    return np.array([[0, -z, y], [z, 0, -x], [-y, x, 0.0]])


def essential_from_pose(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """E = [t]x R for X1 = R X0 + t, so that x1ᵀ E x0 = 0 in normalised coordinates."""
    return skew(t) @ np.asarray(R, np.float64)


def fundamental_from_pose(K0: np.ndarray, K1: np.ndarray, R: np.ndarray, t: np.ndarray):
    return np.linalg.inv(K1).T @ essential_from_pose(R, t) @ np.linalg.inv(K0)


def normalize_points(p: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Pixels → normalised camera coordinates (x, y) = K⁻¹ [u, v, 1]."""
    q = to_homogeneous(np.asarray(p, np.float64)) @ np.linalg.inv(K).T
    return q[:, :2] / q[:, 2:]


def sym_epipolar_distance(p0: np.ndarray, p1: np.ndarray, E: np.ndarray, squared: bool = False):
    """Symmetric epipolar distance of each match under E (or F for pixel coordinates).

    Unsquared (default; Glue Factory's `epi_prec`): |x1ᵀEx0| · (1/‖(Ex0)₁₂‖ + 1/‖(Eᵀx1)₁₂‖) / 2,
    i.e. the mean of the point-to-epipolar-line distances in both images.
    Squared (SuperGlue / LoFTR / GIM): (x1ᵀEx0)² · (1/‖(Ex0)₁₂‖² + 1/‖(Eᵀx1)₁₂‖²).
    """
    x0, x1 = to_homogeneous(np.asarray(p0, np.float64)), to_homogeneous(np.asarray(p1, np.float64))
    Ex0 = x0 @ E.T
    Etx1 = x1 @ E
    num = np.sum(x1 * Ex0, -1)
    d0 = np.maximum(Ex0[:, 0] ** 2 + Ex0[:, 1] ** 2, 1e-12)
    d1 = np.maximum(Etx1[:, 0] ** 2 + Etx1[:, 1] ** 2, 1e-12)
    if squared:
        return num**2 * (1 / d0 + 1 / d1)
    return np.abs(num) * (1 / np.sqrt(d0) + 1 / np.sqrt(d1)) / 2
