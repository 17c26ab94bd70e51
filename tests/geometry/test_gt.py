"""Ground-truth labels on hand-built cases whose answers are derived by hand in the comments."""

import torch

from tiepoint.geometry.depth import sample_depth, warp_with_depth
from tiepoint.geometry.gt import (
    IGNORE,
    UNMATCHED,
    gt_matches_from_homography,
    gt_matches_from_pose_depth,
)


def _t(x):
    return torch.tensor(x, dtype=torch.float32)[None]


def test_homography_labels_hand_built():
    # H translates by (+5, 0). pos_th = 3 px, neg_th = 5 px.
    H = _t([[1, 0, 5], [0, 1, 0], [0, 0, 1]])
    kp0 = _t([[10, 10], [50, 50], [100, 100], [200, 30]])
    kp1 = _t([[15, 10], [59, 50], [300, 300], [206, 30], [207, 30]])
    out = gt_matches_from_homography(kp0, kp1, H, pos_th=3, neg_th=5)
    # kp0[0] → (15,10) = kp1[0]: match. kp0[1] → (55,50), kp1[1] is 4 px away: between thresholds → ignore.
    # kp0[2] → (105,100): nothing within 5 px → unmatched. kp0[3] → (205,30): kp1[3] at 1 px and kp1[4]
    # at 2 px; mutual nearest is kp1[3]; kp1[4] is 2 px from kp0[3]'s warp → ignore. kp1[2] far → unmatched.
    assert out["matches0"][0].tolist() == [0, IGNORE, UNMATCHED, 3]
    assert out["matches1"][0].tolist() == [0, IGNORE, UNMATCHED, 3, IGNORE]
    a = out["assignment"][0]
    assert a.sum() == 2 and a[0, 0] and a[3, 3]


def test_homography_labels_mask_and_empty():
    H = torch.eye(3)[None]
    kp = _t([[10, 10], [40, 40]])
    out = gt_matches_from_homography(kp, kp.clone(), H, mask0=torch.tensor([[True, False]]))
    assert out["matches0"][0].tolist() == [0, UNMATCHED]  # padding is unmatched, never positive
    assert out["matches1"][0].tolist() == [0, UNMATCHED]  # its partner lost its only candidate
    empty = gt_matches_from_homography(torch.zeros(1, 0, 2), kp, H)
    assert empty["matches0"].shape == (1, 0) and empty["matches1"][0].tolist() == [
        UNMATCHED,
        UNMATCHED,
    ]


def test_sample_depth_bilinear_and_holes():
    # depth(x, y) = 1 + x + 10 y is linear, so bilinear sampling is exact at any sub-pixel point.
    ys, xs = torch.meshgrid(torch.arange(6.0), torch.arange(8.0), indexing="ij")
    depth = (1 + xs + 10 * ys)[None]
    pts = _t([[2.25, 3.5], [0.0, 0.0], [6.9, 4.1]])
    z, valid = sample_depth(pts, depth)
    assert valid.all()
    assert torch.allclose(z[0], 1 + pts[0, :, 0] + 10 * pts[0, :, 1], atol=1e-5)
    depth[0, 3, 2] = 0  # a hole poisons the 4 interpolation cells around it, not farther points
    z, valid = sample_depth(_t([[2.5, 3.5], [5.0, 1.0], [-1.0, 2.0]]), depth)
    assert valid[0].tolist() == [False, True, False]  # touches the hole / fine / outside the image


def _stereo_case():
    """Camera 1 = camera 0 moved 1 unit to the right (X1 = X0 − (1,0,0)); plane at z = 10.

    With f = 100 a point at depth 10 moves 100·1/10 = 10 px to the left: x1 = x0 − 10, y1 = y0.
    """
    K = _t([[100, 0, 50], [0, 100, 40], [0, 0, 1]])
    T = torch.eye(4)[None]
    T[0, 0, 3] = -1.0
    depth = torch.full((1, 80, 100), 10.0)
    return K, T, depth


def test_warp_with_depth_analytic():
    K, T, depth = _stereo_case()
    kp0 = _t([[30.0, 20.0], [75.5, 60.25]])
    z, valid = sample_depth(kp0, depth)
    p1, vis = warp_with_depth(kp0, z, valid, T, K, K, depth)
    assert torch.allclose(p1, kp0 - _t([[10.0, 0.0]]), atol=1e-4) and vis.all()


def test_pose_depth_labels_hand_built():
    K, T, depth = _stereo_case()
    depth0, depth1 = depth.clone(), depth.clone()
    depth0[0, 18:23, 60:65] = 0  # no depth around kp0[2] = (62, 20)
    depth0[0, 48:53, 10:15] = 0  # nor around kp0[3] = (12, 50)
    depth1[0, 66:75, 66:75] = 5.0  # an occluder in view 1 where kp0[4] = (80, 70) lands (70, 70)
    kp0 = _t([[30, 20], [50, 40], [62, 20], [12, 50], [80, 70]])
    kp1 = _t([[20, 20], [44, 40], [52.5, 23], [90, 10], [70, 70]])
    out = gt_matches_from_pose_depth(
        kp0, kp1, T, K, K, depth0, depth1, pos_th=3, neg_th=5, epi_th=4
    )
    # kp0[0] → (20,20) = kp1[0]: match. kp0[1] → (40,40); kp1[1] is 4 px away → ignore (both).
    # kp0[2] has no depth; its epipolar line (y = 20) passes 3 px from kp1[2], which has depth but lands
    #   at (62.5, 23) — 3 px from kp0[2], not farther than neg_th — so kp1[2] may be its partner → ignore.
    # kp0[3] has no depth; no free keypoint near y = 50 → unmatched through the epipolar check.
    # kp0[4] lands behind the occluder (depth 10 vs 5 in view 1) → invisible → unmatched; kp1[4] sits on
    #   the occluder (depth 5): it maps to (90, 70) in view 0 where nothing is → unmatched.
    # kp1[3] → (100, 10): outside view 0 → unmatched.
    assert out["matches0"][0].tolist() == [0, IGNORE, IGNORE, UNMATCHED, UNMATCHED]
    assert out["matches1"][0].tolist() == [0, IGNORE, IGNORE, UNMATCHED, UNMATCHED]
    # without the epipolar check a keypoint without depth can never be declared unmatched
    no_epi = gt_matches_from_pose_depth(kp0, kp1, T, K, K, depth0, depth1, pos_th=3, neg_th=5)
    assert no_epi["matches0"][0, 3] == IGNORE


def test_pose_depth_with_keypoint_depths_matches_maps():
    K, T, depth = _stereo_case()
    kp0 = _t([[30, 20], [50, 40], [70, 60]])
    kp1 = _t([[20, 20], [41, 40], [10, 10]])
    a = gt_matches_from_pose_depth(kp0, kp1, T, K, K, depth, depth)
    b = gt_matches_from_pose_depth(
        kp0,
        kp1,
        T,
        K,
        K,
        depth_keypoints0=torch.full((1, 3), 10.0),
        depth_keypoints1=torch.full((1, 3), 10.0),
    )
    assert a["matches0"].tolist() == b["matches0"].tolist() == [[0, 1, UNMATCHED]]
