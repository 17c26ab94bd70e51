"""Ground-truth line matches from a homography or from depth + pose (GlueStick's protocol).

Each segment is sampled at `npts` (50) evenly spaced points, which are moved into the other view.
A sample of line j is *close* to line i when its perpendicular distance to i is below `dist_th`
(5 px) and its foot falls inside segment i. Lines i, j are candidates when, both ways, more than
`overlap_th` (0.2) of the (visible) samples are close; the score is the product of the two counts,
and the Hungarian assignment (scipy's `linear_sum_assignment`) picks one partner per line.

Labels per line (`line_matches0` (B,L0), `line_matches1` (B,L1)), as for keypoints (`gt.py`):
  j ≥ 0  matched to line j of the other view;
  −1     UNMATCHED: no candidate, or most of the line reprojects outside the other image;
  −2     IGNORE: undecidable — too few samples with valid depth, a degenerate (zero-length) line,
         or a line marked invalid (`valid_lines*` False, e.g. padding).
Lines are (B,L,2,2) end points (x, y) in pixels (centres at integers), clipped to the image first.
The caller stores the outputs as `gt_line_matches0/1` and `gt_line_assignment`.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from .depth import sample_depth, warp_with_depth
from .gt import IGNORE, UNMATCHED, warp_points_h
from .homography import warp_points


def sample_line_points(lines: torch.Tensor, npts: int) -> torch.Tensor:
    """(B,L,2,2) segments → (B,L,npts,2) evenly spaced points, both end points included."""
    t = torch.linspace(0, 1, npts, dtype=lines.dtype, device=lines.device)[:, None]
    return lines[..., :1, :] + t * (lines[..., 1:, :] - lines[..., :1, :])


def perpendicular_distance(lines: torch.Tensor, points: torch.Tensor):
    """Distance of points (B,L1,P,2) to the infinite lines through segments (B,L0,2,2), and whether
    each point's foot falls on the segment: both (B,L0,L1,P). Degenerate segments: inf, False."""
    a, d = lines[:, :, 0], lines[:, :, 1] - lines[:, :, 0]  # (B,L0,2)
    length = d.norm(dim=-1)  # (B,L0)
    u = d / length.clamp(min=1e-12)[..., None]
    rel = points[:, None] - a[:, :, None, None]  # (B,L0,L1,P,2)
    along = (rel * u[:, :, None, None]).sum(-1)
    perp = (rel[..., 0] * u[:, :, None, None, 1] - rel[..., 1] * u[:, :, None, None, 0]).abs()
    ok = (length > 0)[:, :, None, None]
    perp = torch.where(ok, perp, torch.full_like(perp, float("inf")))
    overlap = ok & (along >= 0) & (along <= length[:, :, None, None])
    return perp, overlap


def _clip(lines: torch.Tensor, size) -> torch.Tensor:
    w, h = float(size[0]), float(size[1])
    hi = lines.new_tensor([w - 1, h - 1])
    return torch.minimum(lines.clamp(min=0), hi)


def _outside(points: torch.Tensor, size) -> torch.Tensor:
    w, h = float(size[0]), float(size[1])
    x, y = points[..., 0], points[..., 1]
    return ~(torch.isfinite(x) & torch.isfinite(y) & (x >= 0) & (y >= 0) & (x < w) & (y < h))


def assign_lines(
    lines0: torch.Tensor,
    lines1: torch.Tensor,
    pts0_1: torch.Tensor,
    pts1_0: torch.Tensor,
    visible0: torch.Tensor,
    visible1: torch.Tensor,
    out0: torch.Tensor,
    out1: torch.Tensor,
    ignore0: torch.Tensor,
    ignore1: torch.Tensor,
    dist_th: float,
    overlap_th: float,
) -> dict[str, torch.Tensor]:
    """Labels from the samples moved across: `pts0_1` (B,L0,P,2) samples of lines0 in image 1
    (`visible0` (B,L0,P) where they landed validly), `out0` (B,L0) lines mostly outside image 1,
    `ignore0` (B,L0) undecidable lines; symmetric for view 1."""
    b, n0, n1 = lines0.shape[0], lines0.shape[1], lines1.shape[1]
    dev = lines0.device
    m0 = torch.full((b, n0), UNMATCHED, dtype=torch.long, device=dev)
    m1 = torch.full((b, n1), UNMATCHED, dtype=torch.long, device=dev)
    positive = torch.zeros((b, n0, n1), dtype=torch.bool, device=dev)
    if n0 and n1:
        perp0, over0 = perpendicular_distance(lines0, pts1_0)  # samples of lines1 near lines0
        close0 = ((perp0 < dist_th) & over0 & visible1[:, None]).sum(-1)  # (B,L0,L1)
        perp1, over1 = perpendicular_distance(lines1, pts0_1)
        close1 = ((perp1 < dist_th) & over1 & visible0[:, None]).sum(-1).transpose(1, 2)
        mask = (
            (close1 > visible0.sum(-1)[:, :, None] * overlap_th)
            & (close0 > visible1.sum(-1)[:, None, :] * overlap_th)
            & ~(out0 | ignore0)[:, :, None]
            & ~(out1 | ignore1)[:, None, :]
        )
        cost = torch.where(mask, -(close0 * close1).double(), torch.full_like(close0, 0).double())
        for i in range(b):
            rows, cols = linear_sum_assignment(cost[i].cpu().numpy())
            keep = mask[i, rows, cols].cpu().numpy()
            rows, cols = rows[keep], cols[keep]
            positive[i, rows, cols] = True
            m0[i, rows] = torch.as_tensor(cols, dtype=torch.long, device=dev)
            m1[i, cols] = torch.as_tensor(rows, dtype=torch.long, device=dev)
    m0 = torch.where(ignore0, torch.full_like(m0, IGNORE), m0)
    m1 = torch.where(ignore1, torch.full_like(m1, IGNORE), m1)
    return {"line_assignment": positive, "line_matches0": m0, "line_matches1": m1}


def _prepare(lines, size, valid, npts):
    lines = torch.as_tensor(lines).to(torch.float64)
    if lines.ndim == 3:
        lines = lines.reshape(lines.shape[0], -1, 2, 2)
    degenerate = (lines[:, :, 1] - lines[:, :, 0]).norm(dim=-1) == 0
    clipped = _clip(lines, size)
    bad = degenerate | ((clipped[:, :, 1] - clipped[:, :, 0]).norm(dim=-1) == 0)
    if valid is not None:
        bad = bad | ~valid.to(torch.bool)
    return clipped, sample_line_points(clipped, npts), bad


@torch.no_grad()
def gt_line_matches_from_homography(
    lines0: torch.Tensor,
    lines1: torch.Tensor,
    H_0to1: torch.Tensor,
    size0,
    size1,
    valid_lines0: torch.Tensor | None = None,
    valid_lines1: torch.Tensor | None = None,
    npts: int = 50,
    dist_th: float = 5.0,
    overlap_th: float = 0.2,
    min_visibility: float = 0.2,
) -> dict[str, torch.Tensor]:
    """Line labels for a homography pair; `size*` = (W, H). A line is UNMATCHED when at least
    1 − `min_visibility` of its samples land outside the other image (Glue Factory's 0.2)."""
    H = torch.as_tensor(H_0to1).to(torch.float64)
    H = H[None] if H.ndim == 2 else H
    l0, s0, bad0 = _prepare(lines0, size0, valid_lines0, npts)
    l1, s1, bad1 = _prepare(lines1, size1, valid_lines1, npts)
    b, n0, n1 = l0.shape[0], l0.shape[1], l1.shape[1]
    p01 = warp_points_h(H, s0.reshape(b, -1, 2)).reshape(b, n0, npts, 2)
    p10 = warp_points_h(torch.linalg.inv(H), s1.reshape(b, -1, 2)).reshape(b, n1, npts, 2)
    out0 = _outside(p01, size1).double().mean(-1) >= 1 - min_visibility
    out1 = _outside(p10, size0).double().mean(-1) >= 1 - min_visibility
    vis0 = torch.isfinite(p01).all(-1)
    vis1 = torch.isfinite(p10).all(-1)
    return assign_lines(l0, l1, p01, p10, vis0, vis1, out0, out1, bad0, bad1, dist_th, overlap_th)


@torch.no_grad()
def gt_line_matches_from_pose_depth(
    lines0: torch.Tensor,
    lines1: torch.Tensor,
    T_0to1: torch.Tensor,
    K0: torch.Tensor,
    K1: torch.Tensor,
    depth0: torch.Tensor,
    depth1: torch.Tensor,
    valid_lines0: torch.Tensor | None = None,
    valid_lines1: torch.Tensor | None = None,
    npts: int = 50,
    dist_th: float = 5.0,
    overlap_th: float = 0.2,
    min_visibility: float = 0.5,
    rel_depth_tol: float = 0.1,
) -> dict[str, torch.Tensor]:
    """Line labels for posed views with depth maps (B,H,W). A line is IGNORE when fewer than
    `min_visibility` of its samples have valid depth, UNMATCHED when at least 1 − `min_visibility`
    of them land outside the other image; only samples that reproject validly (depth, in front,
    not occluded) count as close."""
    d0, d1 = torch.as_tensor(depth0).double(), torch.as_tensor(depth1).double()
    size0 = (d0.shape[-1], d0.shape[-2])
    size1 = (d1.shape[-1], d1.shape[-2])
    T = torch.as_tensor(T_0to1).double()
    T = T[None] if T.ndim == 2 else T
    K0 = torch.as_tensor(K0).double()
    K1 = torch.as_tensor(K1).double()
    K0, K1 = (K[None] if K.ndim == 2 else K for K in (K0, K1))
    l0, s0, bad0 = _prepare(lines0, size0, valid_lines0, npts)
    l1, s1, bad1 = _prepare(lines1, size1, valid_lines1, npts)
    b, n0, n1 = l0.shape[0], l0.shape[1], l1.shape[1]

    def move(samples, dsrc, ddst, T, Ks, Kd):
        flat = samples.reshape(b, -1, 2)
        z, valid = sample_depth(flat, dsrc)
        p, vis = warp_with_depth(flat, z, valid, T, Ks, Kd, ddst, rel_depth_tol=rel_depth_tol)
        return p, vis, valid

    p01, vis0, val0 = move(s0, d0, d1, T, K0, K1)
    p10, vis1, val1 = move(s1, d1, d0, torch.linalg.inv(T), K1, K0)
    p01, p10 = p01.reshape(b, n0, npts, 2), p10.reshape(b, n1, npts, 2)
    vis0, vis1 = vis0.reshape(b, n0, npts), vis1.reshape(b, n1, npts)
    val0, val1 = val0.reshape(b, n0, npts), val1.reshape(b, n1, npts)
    out0 = (_outside(p01, size1) & val0).double().mean(-1) >= 1 - min_visibility
    out1 = (_outside(p10, size0) & val1).double().mean(-1) >= 1 - min_visibility
    ign0 = bad0 | (val0.double().mean(-1) < min_visibility)
    ign1 = bad1 | (val1.double().mean(-1) < min_visibility)
    return assign_lines(l0, l1, p01, p10, vis0, vis1, out0, out1, ign0, ign1, dist_th, overlap_th)


def line_matches_to_pairs(m0: np.ndarray) -> np.ndarray:
    """(L0,) labels → (K,2) index pairs of the matched lines."""
    m0 = np.asarray(m0).reshape(-1)
    idx = np.flatnonzero(m0 >= 0)
    return np.stack([idx, m0[idx]], -1).astype(np.int64).reshape(-1, 2)


def line_match_error(lines0: np.ndarray, lines1: np.ndarray, H: np.ndarray) -> np.ndarray:
    """(K,2,2) matched segments and the true H (image 0 → 1) → (K,) the larger distance (px) of
    segment 1's end points to the supporting line of H·(segment 0): 0 for a right match, whatever
    part of the line each detection covers. Zero-length segments give NaN."""
    seg = np.asarray(lines0, np.float64).reshape(-1, 2, 2)
    a = warp_points(np.asarray(H, np.float64), seg.reshape(-1, 2)).reshape(-1, 2, 2)
    one = np.ones((len(a), 1))
    n = np.cross(np.c_[a[:, 0], one], np.c_[a[:, 1], one])
    with np.errstate(invalid="ignore", divide="ignore"):
        n = n / np.linalg.norm(n[:, :2], axis=1, keepdims=True)
    b = np.concatenate(
        [np.asarray(lines1, np.float64).reshape(-1, 2, 2), np.ones((len(a), 2, 1))], 2
    )
    return np.abs(np.einsum("lk,lek->le", n, b)).max(1)


__all__ = [
    "assign_lines",
    "gt_line_matches_from_homography",
    "gt_line_matches_from_pose_depth",
    "line_match_error",
    "line_matches_to_pairs",
    "perpendicular_distance",
    "sample_line_points",
]
