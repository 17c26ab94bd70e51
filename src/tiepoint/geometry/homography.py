"""Homography warping, error measures and a weighted DLT fit."""

from __future__ import annotations

import numpy as np


def to_homogeneous(p: np.ndarray) -> np.ndarray:
    return np.concatenate([p, np.ones_like(p[..., :1])], -1)


def warp_points(H: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Apply H to (N, 2) points. Points mapped to infinity come out as inf/nan, never raise."""
    q = to_homogeneous(np.asarray(p, np.float64)) @ np.asarray(H, np.float64).T
    with np.errstate(divide="ignore", invalid="ignore"):
        return q[..., :2] / q[..., 2:]


def image_corners(size) -> np.ndarray:
    """The 4 corners (0,0), (W,0), (W,H), (0,H) of an image of size (W, H), as in HPatches practice."""
    w, h = size
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)


def homography_corner_error(H_est: np.ndarray | None, H_gt: np.ndarray, size) -> float:
    """Mean distance (pixels of image 1) between the corners of image 0 warped by H_est and H_gt.

    A failed estimate (None) counts as an infinite error, so AUCs treat it as a miss.
    """
    if H_est is None:
        return float("inf")
    c = image_corners(size)
    d = np.linalg.norm(warp_points(H_est, c) - warp_points(H_gt, c), axis=-1).mean()
    return float(d) if np.isfinite(d) else float("inf")


def sym_homography_error(p0: np.ndarray, p1: np.ndarray, H: np.ndarray) -> np.ndarray:
    """Per-match mean of the forward (in image 1) and backward (in image 0) reprojection distances."""
    fwd = np.linalg.norm(warp_points(H, p0) - p1, axis=-1)
    bwd = np.linalg.norm(warp_points(np.linalg.inv(H), p1) - p0, axis=-1)
    return (fwd + bwd) / 2


def scale_matrix(scale) -> np.ndarray:
    """Pixel-centre resize x' = (x + 0.5)·s − 0.5 as a 3x3 affine matrix."""
    sx, sy = scale
    return np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])


def scale_homography(H: np.ndarray, scale0, scale1) -> np.ndarray:
    """H between the original images → H between images resized by scale0 / scale1 (sx, sy)."""
    H = scale_matrix(scale1) @ np.asarray(H, np.float64) @ np.linalg.inv(scale_matrix(scale0))
    return H / H[2, 2]


def _normalizer(p: np.ndarray, w: np.ndarray) -> np.ndarray:
    c = (w[:, None] * p).sum(0) / w.sum()
    d = (w * np.linalg.norm(p - c, axis=1)).sum() / w.sum()
    s = np.sqrt(2) / max(d, 1e-12)
    return np.array([[s, 0, -s * c[0]], [0, s, -s * c[1]], [0, 0, 1.0]])


def fit_homography_dlt(p0: np.ndarray, p1: np.ndarray, weights: np.ndarray | None = None):
    """Least-squares (normalised, optionally weighted) DLT on *all* matches, no outlier rejection.

    This is the "DLT" homography of the HPatches protocol: it shows how clean the matches are
    on their own. Returns None for fewer than 4 matches or a degenerate configuration.
    """
    p0, p1 = np.asarray(p0, np.float64), np.asarray(p1, np.float64)
    if len(p0) < 4:
        return None
    w = np.ones(len(p0)) if weights is None else np.asarray(weights, np.float64).clip(min=0)
    if (w > 0).sum() < 4:
        return None
    T0, T1 = _normalizer(p0, w), _normalizer(p1, w)
    q0, q1 = warp_points(T0, p0), warp_points(T1, p1)
    x, y, u, v = q0[:, 0], q0[:, 1], q1[:, 0], q1[:, 1]
    z, o = np.zeros_like(x), np.ones_like(x)
    A = np.stack(
        [
            np.stack([-x, -y, -o, z, z, z, u * x, u * y, u], 1),
            np.stack([z, z, z, -x, -y, -o, v * x, v * y, v], 1),
        ],
        1,
    ).reshape(-1, 9)
    A = A * np.repeat(w, 2)[:, None]
    _, s, vt = np.linalg.svd(A)
    if s[-2] < 1e-10 * max(s[0], 1e-300):  # solution not unique: collinear points etc.
        return None
    Hn = vt[-1].reshape(3, 3)
    H = np.linalg.inv(T1) @ Hn @ T0
    if not np.isfinite(H).all() or abs(H[2, 2]) < 1e-12:
        return None
    return H / H[2, 2]
