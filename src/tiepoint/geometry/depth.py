"""Depth maps at keypoints, and moving keypoints between posed views through depth (batched torch).

Pixel convention as everywhere in tiepoint: pixel centres at integer coordinates, so the centre of
depth-map pixel (row i, column j) is the point (x=j, y=i). Depth ≤ 0 or non-finite means "unknown".
Intrinsics K follow the same convention (a COLMAP K has its principal point 0.5 px further).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sample_depth(points: torch.Tensor, depth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear depth at sub-pixel points, ignoring unknown pixels.

    points (B,N,2) (x,y); depth (B,H,W). Returns depth (B,N) and valid (B,N). A point is valid only
    when all pixels it interpolates from are known: blending a foreground and an unknown (or
    background) pixel would invent a depth that exists nowhere in the scene.
    """
    b, h, w = depth.shape
    known = torch.isfinite(depth) & (depth > 0)
    d = torch.where(known, depth, torch.zeros_like(depth))
    grid = torch.stack([(points[..., 0] + 0.5) / w * 2 - 1, (points[..., 1] + 0.5) / h * 2 - 1], -1)
    grid = grid[:, None].to(d.dtype)  # (B,1,N,2)
    stacked = torch.stack([d, known.to(d.dtype)], 1)  # (B,2,H,W)
    s = F.grid_sample(stacked, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    num, den = s[:, 0, 0], s[:, 1, 0]
    inside = (
        (points[..., 0] >= 0)
        & (points[..., 0] <= w - 1)
        & (points[..., 1] >= 0)
        & (points[..., 1] <= h - 1)
    )
    valid = inside & (den > 1 - 1e-4)
    out = torch.where(valid, num / den.clamp(min=1e-8), torch.zeros_like(num))
    return out, valid


def unproject(points: torch.Tensor, z: torch.Tensor, K: torch.Tensor) -> torch.Tensor:
    """Pixels (B,N,2) at depths z (B,N) → camera-frame 3D points (B,N,3)."""
    ones = torch.ones_like(points[..., :1])
    rays = torch.cat([points, ones], -1) @ torch.linalg.inv(K).transpose(-1, -2)
    return rays * z[..., None]


def project(
    X: torch.Tensor, K: torch.Tensor, eps: float = 1e-6
) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-frame points (B,N,3) → pixels (B,N,2) and whether they lie in front of the camera."""
    z = X[..., 2]
    in_front = z > eps
    p = X @ K.transpose(-1, -2)
    p = p[..., :2] / torch.where(in_front, z, torch.ones_like(z))[..., None]
    return p, in_front


def transform_points(T: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Apply a rigid transform T (B,4,4) to points (B,N,3)."""
    return X @ T[:, :3, :3].transpose(-1, -2) + T[:, None, :3, 3]


def warp_with_depth(
    points0: torch.Tensor,
    z0: torch.Tensor,
    valid0: torch.Tensor,
    T_0to1: torch.Tensor,
    K0: torch.Tensor,
    K1: torch.Tensor,
    depth1: torch.Tensor | None = None,
    image_size1: torch.Tensor | None = None,
    rel_depth_tol: float = 0.1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move keypoints of view 0 (with depths z0) into view 1.

    Returns the projected points (B,N,2) and `visible` (B,N): valid depth, in front of camera 1,
    inside image 1 when its size (B,2)=(W,H) is given, and — when the depth map of view 1 is
    given — not occluded, i.e. view 1's depth there agrees within `rel_depth_tol` (relative).
    """
    X1 = transform_points(T_0to1, unproject(points0, z0, K0))
    p1, visible = project(X1, K1)
    visible = visible & valid0
    if image_size1 is not None:
        wh = image_size1[:, None].to(p1.dtype)
        visible = visible & (p1 >= -0.5).all(-1) & (p1 <= wh - 0.5).all(-1)
    if depth1 is not None:
        z1, known = sample_depth(p1, depth1)
        agree = (z1 - X1[..., 2]).abs() < rel_depth_tol * X1[..., 2].abs()
        visible = visible & known & agree
    return p1, visible
