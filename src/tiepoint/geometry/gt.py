"""Ground-truth correspondences between two keypoint sets, from a homography or from depth + pose.

Labels per keypoint (`matches0` (B,M), `matches1` (B,N)):
  j ≥ 0  matched to keypoint j of the other view (mutual nearest reprojection, within `pos_th` px);
  −1     UNMATCHED: its reprojection is farther than `neg_th` px from every keypoint of the other
         view
         (or it is known to be invisible there) — the matcher must send it to the dustbin;
  −2     IGNORE: neither (between the thresholds, or no depth to decide) — excluded from loss and
         metrics.
Thresholds are in pixels of the images the keypoints live in. Padding keypoints (mask False) are −1.
"""

from __future__ import annotations

import torch

from .depth import sample_depth, warp_with_depth

UNMATCHED = -1
IGNORE = -2


def warp_points_h(H: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply homographies (B,3,3) to points (B,N,2); points sent to infinity become inf."""
    p = torch.cat([points, torch.ones_like(points[..., :1])], -1) @ H.transpose(-1, -2)
    z = p[..., 2:]
    inf = torch.full_like(p[..., :2], float("inf"))
    return torch.where(
        z.abs() > 1e-12, p[..., :2] / torch.where(z.abs() > 1e-12, z, torch.ones_like(z)), inf
    )


def _sqdist(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared distances (B,M,N) between (B,M,2) and (B,N,2); non-finite rows give inf."""
    d = ((a[:, :, None] - b[:, None]) ** 2).sum(-1)
    return torch.where(torch.isfinite(d), d, torch.full_like(d, float("inf")))


def labels_from_distances(
    dist: torch.Tensor,
    dist0: torch.Tensor,
    dist1: torch.Tensor,
    pos_th: float,
    neg_th: float,
    decidable0: torch.Tensor | None = None,
    decidable1: torch.Tensor | None = None,
    mask0: torch.Tensor | None = None,
    mask1: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Turn reprojection distances into labels.

    dist (B,M,N): squared pair distance used for positives (both directions must agree);
    dist0: squared distance from keypoint i reprojected into view 1 to keypoint j (decides −1 in
        view 0); dist1: the same from keypoint j reprojected into view 0 (decides −1 in view 1).
    decidable*: keypoints whose reprojection is known (without depth a keypoint cannot be declared
        unmatched here).
    """
    b, m, n = dist.shape
    dev = dist.device
    if mask0 is None:
        mask0 = torch.ones(b, m, dtype=torch.bool, device=dev)
    if mask1 is None:
        mask1 = torch.ones(b, n, dtype=torch.bool, device=dev)
    if m == 0 or n == 0:
        return {
            "assignment": torch.zeros(b, m, n, dtype=torch.bool, device=dev),
            "matches0": torch.full((b, m), UNMATCHED, dtype=torch.long, device=dev),
            "matches1": torch.full((b, n), UNMATCHED, dtype=torch.long, device=dev),
        }
    pair_ok = mask0[:, :, None] & mask1[:, None]
    inf = torch.full_like(dist, float("inf"))
    dist = torch.where(pair_ok, dist, inf)
    dist0 = torch.where(pair_ok, dist0, inf)
    dist1 = torch.where(pair_ok, dist1, inf)

    min0, arg0 = dist.min(2)  # best j for each i
    min1, arg1 = dist.min(1)  # best i for each j
    ar_m = torch.arange(m, device=dev)[None]
    mutual0 = torch.gather(arg1, 1, arg0) == ar_m
    pos0 = mutual0 & (min0 < pos_th**2)
    assignment = torch.zeros_like(dist, dtype=torch.bool)
    assignment.scatter_(2, arg0[..., None], pos0[..., None])

    matches0 = torch.where(pos0, arg0, torch.full_like(arg0, IGNORE))
    pos1 = assignment.any(1)
    arg1_pos = assignment.float().argmax(1)
    matches1 = torch.where(pos1, arg1_pos, torch.full_like(arg1, IGNORE))

    far0 = dist0.min(2).values > neg_th**2
    far1 = dist1.min(1).values > neg_th**2
    if decidable0 is not None:
        far0 = far0 & decidable0
    if decidable1 is not None:
        far1 = far1 & decidable1
    matches0 = torch.where(~pos0 & far0, torch.full_like(matches0, UNMATCHED), matches0)
    matches1 = torch.where(~pos1 & far1, torch.full_like(matches1, UNMATCHED), matches1)
    matches0 = torch.where(mask0, matches0, torch.full_like(matches0, UNMATCHED))
    matches1 = torch.where(mask1, matches1, torch.full_like(matches1, UNMATCHED))
    return {"assignment": assignment, "matches0": matches0, "matches1": matches1}


@torch.no_grad()
def gt_matches_from_homography(
    kp0: torch.Tensor,
    kp1: torch.Tensor,
    H_0to1: torch.Tensor,
    pos_th: float = 3.0,
    neg_th: float = 3.0,
    mask0: torch.Tensor | None = None,
    mask1: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Labels for keypoints (B,M,2), (B,N,2) related by H_0to1 (B,3,3) (pixel-centre convention)."""
    H = H_0to1.to(torch.float64)
    p01 = warp_points_h(H, kp0.to(torch.float64))
    p10 = warp_points_h(torch.linalg.inv(H), kp1.to(torch.float64))
    d0 = _sqdist(p01, kp1.to(torch.float64))
    d1 = _sqdist(kp0.to(torch.float64), p10)
    out = labels_from_distances(
        torch.maximum(d0, d1), d0, d1, pos_th, neg_th, mask0=mask0, mask1=mask1
    )
    out["proj_0to1"], out["proj_1to0"] = p01.to(kp0.dtype), p10.to(kp1.dtype)
    return out


def _skew(t: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(t[:, 0])
    return torch.stack(
        [
            torch.stack([z, -t[:, 2], t[:, 1]], -1),
            torch.stack([t[:, 2], z, -t[:, 0]], -1),
            torch.stack([-t[:, 1], t[:, 0], z], -1),
        ],
        1,
    )


def fundamental_matrix(T_0to1: torch.Tensor, K0: torch.Tensor, K1: torch.Tensor) -> torch.Tensor:
    """F (B,3,3) with x1ᵀ F x0 = 0 for pixel points (pixel-centre convention)."""
    E = _skew(T_0to1[:, :3, 3]) @ T_0to1[:, :3, :3]
    return torch.linalg.inv(K1).transpose(-1, -2) @ E @ torch.linalg.inv(K0)


def epipolar_distances(kp0: torch.Tensor, kp1: torch.Tensor, F: torch.Tensor) -> torch.Tensor:
    """(B,M,N) pixel distance of each pair to each other's epipolar line (the smaller one)."""
    h0 = torch.cat([kp0, torch.ones_like(kp0[..., :1])], -1)
    h1 = torch.cat([kp1, torch.ones_like(kp1[..., :1])], -1)
    l1 = h0 @ F.transpose(-1, -2)  # (B,M,3) lines in image 1
    l0 = h1 @ F  # (B,N,3) lines in image 0
    alg = torch.einsum("bmk,bnk->bmn", l1, h1)  # x1ᵀ F x0
    d_in1 = alg.abs() / l1[..., :2].norm(dim=-1).clamp(min=1e-12)[:, :, None]
    d_in0 = alg.abs() / l0[..., :2].norm(dim=-1).clamp(min=1e-12)[:, None, :]
    return torch.minimum(d_in0, d_in1)


@torch.no_grad()
def gt_matches_from_pose_depth(
    kp0: torch.Tensor,
    kp1: torch.Tensor,
    T_0to1: torch.Tensor,
    K0: torch.Tensor,
    K1: torch.Tensor,
    depth0: torch.Tensor | None = None,
    depth1: torch.Tensor | None = None,
    depth_keypoints0: torch.Tensor | None = None,
    depth_keypoints1: torch.Tensor | None = None,
    pos_th: float = 3.0,
    neg_th: float = 5.0,
    epi_th: float | None = None,
    rel_depth_tol: float = 0.1,
    mask0: torch.Tensor | None = None,
    mask1: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Labels for keypoints of two posed views with depth.

    Depth at keypoints comes from the depth maps (B,H,W) or precomputed `depth_keypoints*` (B,N;
    ≤0 = unknown, e.g. from a feature cache). With maps, a reprojection must also agree with the
    other view's depth (occlusion check). A keypoint without depth is −2, unless `epi_th` is set and
    no keypoint it could still match lies within `epi_th` px of its epipolar line: then it is −1.
    """
    kp0d, kp1d = kp0.to(torch.float64), kp1.to(torch.float64)
    T = T_0to1.to(torch.float64)
    K0, K1 = K0.to(torch.float64), K1.to(torch.float64)

    def keypoint_depth(kp, dmap, dkp):
        if dkp is not None:
            z = dkp.to(torch.float64)
            return z, torch.isfinite(z) & (z > 0)
        if dmap is None:
            raise ValueError("gt_matches_from_pose_depth needs depth maps or depth_keypoints")
        return sample_depth(kp, dmap.to(torch.float64))

    z0, valid0 = keypoint_depth(kp0d, depth0, depth_keypoints0)
    z1, valid1 = keypoint_depth(kp1d, depth1, depth_keypoints1)
    d1map = depth1.to(torch.float64) if depth1 is not None else None
    d0map = depth0.to(torch.float64) if depth0 is not None else None
    p01, vis0 = warp_with_depth(kp0d, z0, valid0, T, K0, K1, d1map, rel_depth_tol=rel_depth_tol)
    p10, vis1 = warp_with_depth(
        kp1d, z1, valid1, torch.linalg.inv(T), K1, K0, d0map, rel_depth_tol=rel_depth_tol
    )

    inf = torch.tensor(float("inf"), dtype=torch.float64, device=kp0.device)
    d0 = torch.where(vis0[:, :, None], _sqdist(p01, kp1d), inf)
    d1 = torch.where(vis1[:, None, :], _sqdist(kp0d, p10), inf)
    out = labels_from_distances(
        torch.maximum(d0, d1),
        d0,
        d1,
        pos_th,
        neg_th,
        decidable0=valid0,
        decidable1=valid1,
        mask0=mask0,
        mask1=mask1,
    )
    if epi_th is not None and kp0.shape[1] and kp1.shape[1]:
        epi = epipolar_distances(kp0d, kp1d, fundamental_matrix(T, K0, K1))
        m0, m1 = out["matches0"], out["matches1"]
        # j can still be i's partner unless it is matched, or its own depth puts it far from i.
        free1 = (m1 < 0)[:, None, :] & (~valid1[:, None, :] | (d1 <= neg_th**2))
        free0 = (m0 < 0)[:, :, None] & (~valid0[:, :, None] | (d0 <= neg_th**2))
        near0 = ((epi < epi_th) & free1).any(2)
        near1 = ((epi < epi_th) & free0).any(1)
        out["matches0"] = torch.where(
            (m0 == IGNORE) & ~valid0 & ~near0, torch.full_like(m0, UNMATCHED), m0
        )
        out["matches1"] = torch.where(
            (m1 == IGNORE) & ~valid1 & ~near1, torch.full_like(m1, UNMATCHED), m1
        )
    out["proj_0to1"], out["proj_1to0"] = p01.to(kp0.dtype), p10.to(kp1.dtype)
    out["visible0"], out["visible1"] = vis0, vis1
    return out
