"""LSD lines on a real homography pair: ground truth from the true H, then the point-line
estimator recovers H from the GT-matched lines with a third of them replaced by wrong ones."""

from __future__ import annotations

import cv2
import numpy as np
import torch
from helpers import require

from tiepoint.estimators import estimate_homography
from tiepoint.geometry.homography import homography_corner_error, warp_points
from tiepoint.geometry.lines import gt_line_matches_from_homography, line_matches_to_pairs
from tiepoint.models.extractors.lsd import detect_lsd


def test_lsd_lines_gt_and_point_line_homography_on_boat(data_dir):
    root = data_dir / "homography"
    pair = next(
        ln.split()
        for ln in require(root / "pairs.txt").read_text().splitlines()
        if ln.startswith("oxford_boat/img1.png oxford_boat/img2.png")
    )
    H = np.array(pair[2:], float).reshape(3, 3)
    i0, i1 = (cv2.imread(str(require(root / p)), cv2.IMREAD_GRAYSCALE) for p in pair[:2])
    l0, _ = detect_lsd(i0)
    l1, _ = detect_lsd(i1)
    assert len(l0) == len(l1) == 250  # a textured scene fills the default budget
    size0, size1 = i0.shape[::-1], i1.shape[::-1]
    gt = gt_line_matches_from_homography(
        torch.from_numpy(l0)[None], torch.from_numpy(l1)[None], H, size0, size1
    )
    m = line_matches_to_pairs(gt["line_matches0"][0].numpy())
    assert len(m) > 150  # 190 measured: boat 1→2 is a mild zoom-rotation
    # every GT pair really lies on one line: the mapped end points are near the other segment's line
    a = warp_points(H, l0[m[:, 0]].reshape(-1, 2)).reshape(-1, 2, 2)
    b = l1[m[:, 1]]
    n = np.cross(
        np.append(b[:, 0], np.ones((len(b), 1)), 1), np.append(b[:, 1], np.ones((len(b), 1)), 1)
    )
    n /= np.linalg.norm(n[:, :2], axis=1, keepdims=True)
    dist = np.abs((np.concatenate([a, np.ones((len(a), 2, 1))], -1) * n[:, None]).sum(-1))
    assert np.median(dist) < 1.5
    s0, s1 = l0[m[:, 0]], l1[m[:, 1]].copy()
    rng = np.random.default_rng(0)
    wrong = len(m) // 3
    s1[:wrong] = l1[rng.integers(0, len(l1), wrong)]
    est = estimate_homography(
        np.zeros((0, 2)), np.zeros((0, 2)), "point_line", 3.0, lines0=s0, lines1=s1
    )
    assert est.success
    assert homography_corner_error(est.H, H, size0) < 3.0  # 1.0 px measured
