"""Dense ground-truth warps for dense matchers (DKM): where every grid cell of image 0 lands in
image 1, from a homography or from depth + pose + intrinsics (batched torch, no gradients).

Coordinates follow DKM's normalised convention (grid_sample with align_corners=False): −1 is the
left/top edge of the first pixel, +1 the right/bottom edge of the last one, so an h×w grid over
image 0 has its cell centres at u = (j + 0.5)/w·2 − 1. A normalised u maps to tiepoint pixels
(centres at integers) of an image of width W as x = (u + 1)/2·W − 0.5, and back as
u = (x + 0.5)/W·2 − 1. The grid may be coarser than the images (DKM supervises every scale at its
own resolution): the GT is computed at the grid's cell centres, not resampled from a finer GT.

Each function returns `warp` (B,h,w,2) — normalised (x, y) in image 1 — and `prob` (B,h,w) in
{0, 1}: 1 where the correspondence is known and lands inside image 1. Where `prob` is 0 the warp is
still the geometric projection when it is finite (DKM's coarse-to-fine mask compares predictions
with it, occluded or out-of-image targets included) and 0 where it is not, so losses can mask it
without NaN gradients.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from ..errors import ConfigError
from .depth import sample_depth, warp_with_depth
from .gt import warp_points_h


def _wh(size, b: int, device, dtype=torch.float64) -> torch.Tensor:
    """An image size given as (W, H), a (2,) or a (B,2) tensor → (B,2) (W, H)."""
    s = torch.as_tensor(size, dtype=dtype, device=device)
    return s.reshape(-1, 2).expand(b, 2)


def normalized_grid(b: int, h: int, w: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """Cell centres of an h×w grid in normalised coordinates, (B,h,w,2) as (x, y)."""
    ys = (torch.arange(h, device=device, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, device=device, dtype=dtype) + 0.5) / w * 2 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)[None].expand(b, h, w, 2)


def to_pixels(u: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Normalised (..., 2) → tiepoint pixels for image sizes (B,2) (W, H); u is (B, ..., 2)."""
    wh = size.reshape(size.shape[0], *([1] * (u.dim() - 2)), 2).to(u.dtype)
    return (u + 1) / 2 * wh - 0.5


def to_normalized(x: torch.Tensor, size: torch.Tensor) -> torch.Tensor:
    """Tiepoint pixels (B, ..., 2) → normalised coordinates for image sizes (B,2) (W, H)."""
    wh = size.reshape(size.shape[0], *([1] * (x.dim() - 2)), 2).to(x.dtype)
    return (x + 0.5) / wh * 2 - 1


def _finish(u1: torch.Tensor, valid: torch.Tensor, shape, dtype) -> tuple[torch.Tensor, ...]:
    finite = torch.isfinite(u1).all(-1)
    inside = valid & finite & (u1.abs() < 1).all(-1)
    u1 = torch.where(finite[..., None], u1, torch.zeros_like(u1))
    return u1.reshape(*shape, 2).to(dtype), inside.reshape(shape).to(dtype)


@torch.no_grad()
def dense_gt_from_homography(
    H_0to1: torch.Tensor, size0, size1, grid_hw: tuple[int, int], dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """GT warp of an (h, w) grid over image 0 through H_0to1 (B,3,3), a homography between the
    images' pixel coordinates (tiepoint convention); size0/size1: (W, H) or (B,2) of the images."""
    b, dev = H_0to1.shape[0], H_0to1.device
    h, w = grid_hw
    s0, s1 = _wh(size0, b, dev), _wh(size1, b, dev)
    p0 = to_pixels(normalized_grid(b, h, w, dev).reshape(b, h * w, 2), s0)
    p1 = warp_points_h(H_0to1.to(torch.float64), p0)
    valid = torch.ones(b, h * w, dtype=torch.bool, device=dev)
    return _finish(to_normalized(p1, s1), valid, (b, h, w), dtype)


@torch.no_grad()
def dense_gt_from_depth(
    depth0: torch.Tensor,
    depth1: torch.Tensor,
    T_0to1: torch.Tensor,
    K0: torch.Tensor,
    K1: torch.Tensor,
    grid_hw: tuple[int, int],
    rel_depth_tol: float = 0.05,
    dtype=torch.float32,
) -> tuple[torch.Tensor, torch.Tensor]:
    """GT warp of an (h, w) grid over image 0 from depth (DKM's `warp_kpts`).

    depth0/depth1 (B,H,W) (≤0 / non-finite = unknown) cover the whole images; K0/K1 (B,3,3) are
    the intrinsics of those depth-map grids (pixel centres at integers); T_0to1 (B,4,4) or (B,3,4).
    A cell is valid when its depth in view 0 is known, it projects in front of camera 1 and inside
    image 1, and view 1's depth there agrees with the projected depth within `rel_depth_tol`
    (relative; DKM's 0.05) — the occlusion check. Same geometry as the sparse GT in `gt.py`.
    """
    b, dev = depth0.shape[0], depth0.device
    h, w = grid_hw
    f64 = torch.float64
    s0 = torch.tensor([depth0.shape[-1], depth0.shape[-2]], dtype=f64, device=dev).expand(b, 2)
    s1 = torch.tensor([depth1.shape[-1], depth1.shape[-2]], dtype=f64, device=dev).expand(b, 2)
    T = T_0to1.to(f64)
    if T.shape[-2] == 3:
        T = torch.cat(
            [T, torch.tensor([[[0, 0, 0, 1.0]]], dtype=f64, device=dev).expand(b, 1, 4)], 1
        )
    p0 = to_pixels(normalized_grid(b, h, w, dev).reshape(b, h * w, 2), s0)
    z0, known0 = sample_depth(p0, depth0.to(f64))
    p1, visible = warp_with_depth(
        p0, z0, known0, T, K0.to(f64), K1.to(f64), depth1.to(f64), rel_depth_tol=rel_depth_tol
    )
    return _finish(to_normalized(p1, s1), visible, (b, h, w), dtype)


def _view_size(data: Mapping, i: str, b: int, dev) -> torch.Tensor:
    """(B,2) (W, H) of the image tensor of view i (the full tensor, padding included)."""
    view = data.get(f"view{i}", {})
    if "image" in view:
        img = view["image"]
        return _wh((img.shape[-1], img.shape[-2]), b, dev)
    if f"image{i}" in data:
        img = data[f"image{i}"]
        return _wh((img.shape[-1], img.shape[-2]), b, dev)
    raise ConfigError(f"batch has no view{i}.image / image{i}: cannot size the dense ground truth")


@torch.no_grad()
def dense_gt(
    data: Mapping, grid_hw: tuple[int, int], rel_depth_tol: float = 0.05
) -> tuple[torch.Tensor, torch.Tensor]:
    """GT warp of a batch (a training batch dict): from `H_0to1` when present, else from
    `T_0to1` with the views' `depth` and `K` (or top-level `K0`/`K1`)."""
    if "H_0to1" in data:
        H = data["H_0to1"]
        b, dev = H.shape[0], H.device
        return dense_gt_from_homography(
            H, _view_size(data, "0", b, dev), _view_size(data, "1", b, dev), grid_hw
        )
    if "T_0to1" in data:
        v0, v1 = data.get("view0", {}), data.get("view1", {})
        if "depth" not in v0 or "depth" not in v1:
            raise ConfigError("dense ground truth from a pose needs depth maps (view0/1.depth)")
        K0 = data["K0"] if "K0" in data else v0["K"]
        K1 = data["K1"] if "K1" in data else v1["K"]
        return dense_gt_from_depth(
            v0["depth"], v1["depth"], data["T_0to1"], K0, K1, grid_hw, rel_depth_tol
        )
    raise ConfigError("batch has neither H_0to1 nor T_0to1: cannot compute dense ground truth")
