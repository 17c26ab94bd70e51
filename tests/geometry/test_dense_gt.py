"""Dense GT warps against independent truths: numpy homography mapping by hand, the homography a
plane induces between two posed cameras, an occluder, and the sparse GT of `gt.py`."""

import numpy as np
import pytest
import torch

from tiepoint.errors import ConfigError
from tiepoint.geometry.dense_gt import (
    dense_gt,
    dense_gt_from_depth,
    dense_gt_from_homography,
    to_normalized,
    to_pixels,
)
from tiepoint.geometry.gt import gt_matches_from_homography, gt_matches_from_pose_depth
from tiepoint.geometry.homography import warp_points

H_A = np.array([[0.9, 0.08, 6.0], [-0.05, 1.1, 3.0], [4e-4, -2e-4, 1.0]])
H_B = np.array([[1.2, 0.0, -10.0], [0.0, 1.2, -8.0], [0.0, 0.0, 1.0]])


def test_homography_gt_matches_hand_mapping():
    size0, size1, (h, w) = (80, 60), (100, 70), (15, 20)
    H = torch.from_numpy(np.stack([H_A, H_B]))
    warp, prob = dense_gt_from_homography(H, size0, size1, (h, w))
    assert warp.shape == (2, h, w, 2) and prob.shape == (2, h, w)
    for b, Hn in enumerate((H_A, H_B)):
        for i, j in [(0, 0), (3, 7), (14, 19), (7, 10), (0, 19)]:
            # cell (i, j) centre: normalised ((j+.5)/w·2−1, …) → pixel x = (u+1)/2·W − 0.5
            x0 = np.array([[(j + 0.5) / w * size0[0] - 0.5, (i + 0.5) / h * size0[1] - 0.5]])
            x1 = warp_points(Hn, x0)[0]
            u1 = (x1 + 0.5) / np.array(size1) * 2 - 1
            inside = bool((np.abs(u1) < 1).all())
            assert prob[b, i, j].item() == float(inside)
            if inside:
                np.testing.assert_allclose(warp[b, i, j].numpy(), u1, atol=1e-5)
    # H_B zooms in by 1.2 with an offset: the top-left cell lands outside image 1
    assert prob[1, 0, 0] == 0 and prob[1].sum() > 0 and prob[0].sum() > 0
    assert torch.isfinite(warp).all()


def test_homography_gt_equals_sparse_projection():
    H = torch.from_numpy(H_A)[None]
    size = torch.tensor([[80.0, 60.0]])
    warp, prob = dense_gt_from_homography(H, size, size, (12, 16))
    kp0 = to_pixels(
        dense_gt_from_homography(torch.eye(3, dtype=torch.float64)[None], size, size, (12, 16))[0]
        .double()
        .reshape(1, -1, 2),
        size,
    )
    sparse = gt_matches_from_homography(kp0, kp0, H)
    proj = to_normalized(sparse["proj_0to1"], size).reshape(1, 12, 16, 2)
    ok = prob > 0
    torch.testing.assert_close(warp[ok], proj[ok].float(), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- a posed plane
W, Hgt = 64, 48
K = np.array([[60.0, 0, (W - 1) / 2], [0, 60.0, (Hgt - 1) / 2], [0, 0, 1]])
N0 = np.array([0.1, -0.05, 1.0])  # plane n·X = C in camera 0
C = 5.0
ANG = np.deg2rad(3.0)
R = np.array([[np.cos(ANG), 0, np.sin(ANG)], [0, 1, 0], [-np.sin(ANG), 0, np.cos(ANG)]])
T = np.array([0.3, 0.05, 0.1])


def _plane_depth(n, c):
    """Depth map (pixel centres at integers) of the plane n·X = c seen by K."""
    ys, xs = np.mgrid[0:Hgt, 0:W]
    rays = np.stack([xs, ys, np.ones_like(xs)], -1).astype(np.float64) @ np.linalg.inv(K).T
    return c / (rays @ n)


def _scene():
    n1, c1 = R @ N0, C + (R @ N0) @ T  # the plane in camera 1's frame
    d0, d1 = _plane_depth(N0, C), _plane_depth(n1, c1)
    T01 = np.eye(4)
    T01[:3, :3], T01[:3, 3] = R, T
    H_plane = K @ (R + np.outer(T, N0) / C) @ np.linalg.inv(K)  # X1 = (R + t nᵀ/c) X0
    t = lambda a: torch.from_numpy(a)[None]
    return t(d0), t(d1), t(T01), t(K), H_plane


@pytest.mark.parametrize("grid", [(Hgt, W), (12, 16)])
def test_depth_gt_equals_plane_homography(grid):
    d0, d1, T01, Kt, H_plane = _scene()
    warp, prob = dense_gt_from_depth(d0, d1, T01, Kt, Kt, grid, dtype=torch.float64)
    h, w = grid
    ys, xs = np.mgrid[0:h, 0:w]
    x0 = np.stack([(xs + 0.5) / w * W - 0.5, (ys + 0.5) / h * Hgt - 0.5], -1).reshape(-1, 2)
    x1 = warp_points(H_plane, x0).reshape(h, w, 2)
    # warp in pixels of image 1 vs the analytic plane homography; grid == depth grid samples depth
    # exactly, a coarser grid interpolates depth bilinearly (tiny error on this gentle plane)
    got = to_pixels(warp, torch.tensor([[W, Hgt]], dtype=torch.float64))[0].numpy()
    ok = prob[0].numpy() > 0
    np.testing.assert_allclose(got[ok], x1[ok], atol=1e-6 if grid == (Hgt, W) else 2e-2)
    margin = (x1[..., 0] > 0.5) & (x1[..., 0] < W - 1.5) & (x1[..., 1] > 0.5)
    margin &= x1[..., 1] < Hgt - 1.5
    outside = (x1[..., 0] < -0.5) | (x1[..., 0] > W - 0.5) | (x1[..., 1] < -0.5)
    outside |= x1[..., 1] > Hgt - 0.5
    assert ok[margin].all() and not ok[outside].any()
    assert margin.sum() > 0.5 * h * w and outside.any()


def test_depth_gt_occlusion_and_unknown_depth():
    d0, d1, T01, Kt, H_plane = _scene()
    d1 = d1.clone()
    d1[:, 10:30, 20:40] *= 0.5  # an occluder halfway to the plane hides part of it from view 1
    d0 = d0.clone()
    d0[:, :, :8] = 0  # unknown depth in view 0's left strip
    warp, prob = dense_gt_from_depth(d0, d1, T01, Kt, Kt, (Hgt, W))
    ys, xs = np.mgrid[0:Hgt, 0:W]
    x1 = warp_points(H_plane, np.stack([xs, ys], -1).reshape(-1, 2).astype(float))
    x1 = x1.reshape(Hgt, W, 2)
    hidden = (x1[..., 0] > 20.5) & (x1[..., 0] < 38.5) & (x1[..., 1] > 10.5) & (x1[..., 1] < 28.5)
    visible = (x1[..., 0] > 0.5) & (x1[..., 0] < W - 1.5) & (x1[..., 1] > 0.5)
    visible &= (x1[..., 1] < Hgt - 1.5) & (xs >= 9)
    visible &= ~(
        (x1[..., 0] > 18.5) & (x1[..., 0] < 40.5) & (x1[..., 1] > 8.5) & (x1[..., 1] < 30.5)
    )
    p = prob[0].numpy()
    assert hidden.sum() > 100 and (p[hidden] == 0).all()
    assert (p[:, :8] == 0).all()
    assert (p[visible] == 1).all()
    assert torch.isfinite(warp).all()
    # hidden cells keep their geometric target (DKM's coarse-to-fine mask compares against it)
    got = to_pixels(warp, torch.tensor([[W, Hgt]]))[0].double().numpy()
    np.testing.assert_allclose(got[hidden], x1[hidden], atol=1e-3)


def test_depth_gt_agrees_with_sparse_gt():
    d0, d1, T01, Kt, _ = _scene()
    d1 = d1.clone()
    d1[:, 10:30, 20:40] *= 0.5
    h, w = 24, 32
    size = torch.tensor([[W, Hgt]], dtype=torch.float64)
    warp, prob = dense_gt_from_depth(d0, d1, T01, Kt, Kt, (h, w), dtype=torch.float64)
    grid = dense_gt_from_homography(torch.eye(3)[None], size, size, (h, w), torch.float64)[0]
    kp0 = to_pixels(grid.reshape(1, -1, 2), size)
    valid = prob.reshape(-1) > 0
    kp1 = to_pixels(warp.reshape(1, -1, 2), size)[:, valid]
    sparse = gt_matches_from_pose_depth(kp0, kp1, T01, Kt, Kt, d0, d1, rel_depth_tol=0.05)
    assert torch.equal(sparse["visible0"][0], valid)
    m0 = sparse["matches0"][0]
    assert torch.equal(m0[valid], torch.arange(int(valid.sum())))
    assert (m0[~valid] < 0).all()
    torch.testing.assert_close(sparse["proj_0to1"][0, valid], kp1[0], atol=1e-6, rtol=0)


def test_dense_gt_dispatch_from_batch():
    H = torch.from_numpy(H_A).float()[None]
    batch = {"H_0to1": H, "view0": {"image": torch.zeros(1, 3, 60, 80)}}
    batch["view1"] = {"image": torch.zeros(1, 3, 70, 100)}
    w1, p1 = dense_gt(batch, (15, 20))
    w2, p2 = dense_gt_from_homography(H, (80, 60), (100, 70), (15, 20))
    assert torch.equal(w1, w2) and torch.equal(p1, p2)
    d0, d1, T01, Kt, _ = _scene()
    posed = {"T_0to1": T01, "view0": {"depth": d0, "K": Kt}, "view1": {"depth": d1, "K": Kt}}
    w3, p3 = dense_gt(posed, (12, 16))
    w4, p4 = dense_gt_from_depth(d0, d1, T01, Kt, Kt, (12, 16))
    assert torch.equal(w3, w4) and torch.equal(p3, p4)
    with pytest.raises(ConfigError, match="depth"):
        dense_gt({"T_0to1": T01, "view0": {"K": Kt}, "view1": {"K": Kt}}, (4, 4))
    with pytest.raises(ConfigError, match="neither"):
        dense_gt({}, (4, 4))
