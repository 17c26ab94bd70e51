"""Line ground truth on hand-made cases whose labels follow from the drawing."""

from __future__ import annotations

import numpy as np
import torch

from tiepoint.geometry.lines import (
    gt_line_matches_from_homography,
    gt_line_matches_from_pose_depth,
    perpendicular_distance,
    sample_line_points,
)

SIZE = (200, 150)  # (W, H)


def T(a):
    return torch.tensor(np.asarray(a, np.float64))[None]


def shift(dx, dy):
    return np.array([[1, 0, dx], [0, 1, dy], [0, 0, 1.0]])


def test_samples_and_perpendicular_distance_by_hand():
    seg = T([[[0, 0], [10, 0]]])
    pts = sample_line_points(seg, 11)
    assert torch.allclose(pts[0, 0, :, 0], torch.arange(11.0, dtype=torch.float64))
    # points 3 px above the x axis, one beyond the end: distances 3, feet inside except the last
    q = T([[[2, 3], [10, 3], [12, -3]]])
    d, on = perpendicular_distance(seg, q)
    assert torch.allclose(d[0, 0, 0], torch.tensor([3.0, 3.0, 3.0], dtype=torch.float64))
    assert on[0, 0, 0].tolist() == [True, True, False]


def test_homography_translation_labels():
    l0 = [
        [[20, 20], [120, 20]],  # 0 → 1 of image 1 (shifted)
        [[30, 40], [30, 130]],  # 1 → 0
        [[60, 60], [160, 110]],  # 2: its copy in image 1 is 20 px off the line → unmatched
        [[5, 5], [5, 5]],  # 3: zero length → ignore
    ]
    H = shift(10, 5)
    l1 = [
        [[40, 45], [40, 135]],  # line 1 moved
        [[30, 25], [130, 25]],  # line 0 moved
        [[70, 85], [170, 135]],  # line 2 moved and pushed 20 px down (~18 px perpendicular)
        [[150, 10], [190, 10]],  # nothing maps here (line 0's image ends at x=130)
    ]
    gt = gt_line_matches_from_homography(T(l0), T(l1), H, SIZE, SIZE)
    assert gt["line_matches0"][0].tolist() == [1, 0, -1, -2]
    assert gt["line_matches1"][0].tolist() == [1, 0, -1, -1]
    assert gt["line_assignment"][0].sum() == 2


def test_overlap_threshold_and_hungarian():
    l0 = [[[20, 50], [180, 50]]]
    # a: on the line but covering only 10% of it → not enough overlap; b: half of it → match
    l1 = [[[20, 50], [36, 50]], [[20, 52], [100, 52]]]
    gt = gt_line_matches_from_homography(T(l0), T(l1), np.eye(3), SIZE, SIZE)
    assert gt["line_matches0"][0].tolist() == [1]
    assert gt["line_matches1"][0].tolist() == [-1, 0]
    # two lines of image 0 want the same line of image 1: the one overlapping more wins
    l0 = [[[20, 50], [60, 50]], [[20, 51], [180, 51]]]
    l1 = [[[20, 50], [180, 50]]]
    gt = gt_line_matches_from_homography(T(l0), T(l1), np.eye(3), SIZE, SIZE)
    assert gt["line_matches0"][0].tolist() == [-1, 0]


def test_outside_and_invalid_and_empty():
    l0 = [[[20, 50], [180, 50]], [[20, 80], [180, 80]]]
    H = shift(190, 0)  # line 0 lands almost completely right of image 1
    l1 = [[[195, 50], [199, 50]]]
    valid0 = torch.tensor([[True, False]])
    gt = gt_line_matches_from_homography(T(l0), T(l1), H, SIZE, SIZE, valid_lines0=valid0)
    assert gt["line_matches0"][0].tolist() == [-1, -2]
    empty = torch.zeros(1, 0, 2, 2, dtype=torch.float64)
    gt = gt_line_matches_from_homography(empty, T(l1), np.eye(3), SIZE, SIZE)
    assert gt["line_matches0"].shape == (1, 0) and gt["line_matches1"][0].tolist() == [-1]


def test_pose_depth_plane_and_missing_depth():
    """A fronto-parallel plane at depth 10, camera moved 1 unit left: image 1 = image 0 shifted
    by f·t/Z = 100·1/10 = 10 px right. Depth of image 0 unknown for x < 60: lines there → −2."""
    w, h = SIZE
    K = torch.tensor([[100.0, 0, w / 2], [0, 100.0, h / 2], [0, 0, 1]], dtype=torch.float64)
    Tm = torch.eye(4, dtype=torch.float64)
    Tm[0, 3] = 1.0  # X1 = X0 + (1,0,0) → x1 = x0 + 10
    d0 = torch.full((1, h, w), 10.0, dtype=torch.float64)
    d0[:, :, :60] = 0
    d1 = torch.full((1, h, w), 10.0, dtype=torch.float64)
    l0 = [[[80, 30], [180, 30]], [[100, 40], [100, 140]], [[10, 60], [50, 120]]]
    l1 = [[[110, 45], [110, 145]], [[90, 30], [190, 30]], [[20, 60], [60, 120]]]
    gt = gt_line_matches_from_pose_depth(T(l0), T(l1), Tm[None], K[None], K[None], d0, d1)
    assert gt["line_matches0"][0].tolist() == [1, 0, -2]
    # image 1's line 2 reprojects into the no-depth area of image 0 (occlusion check fails) and
    # nothing there matches it; its own depth is fine, so it is decided as unmatched
    assert gt["line_matches1"][0].tolist() == [1, 0, -1]


def test_line_match_error_is_the_distance_to_the_true_line():
    from tiepoint.geometry.lines import line_match_error

    H = np.array([[2.0, 0, 10], [0, 2.0, 0], [0, 0, 1]])  # scale 2, shift x by 10
    l0 = np.array([[[0, 0], [10, 0]], [[0, 0], [0, 5]], [[3, 3], [3, 3]]], float)
    # the images of line 0 (y = 0) and line 1 (x = 10), covered partly, and off by 1 / 2 px
    l1 = np.array([[[40, 1], [100, 0]], [[8, 3], [10, 50]], [[0, 0], [1, 1]]], float)
    err = line_match_error(l0, l1, H)
    np.testing.assert_allclose(err[:2], [1.0, 2.0])
    assert np.isnan(err[2])  # zero-length: no line
