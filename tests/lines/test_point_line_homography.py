"""The point-and-line homography estimator against known homographies."""

from __future__ import annotations

import numpy as np
import pytest

from tiepoint.errors import EstimatorError
from tiepoint.estimators import estimate_homography
from tiepoint.geometry.homography import homography_corner_error, warp_points

SIZE = (640, 480)
H_TRUE = np.array([[0.9, 0.12, 30.0], [-0.08, 1.05, -12.0], [2e-4, -1e-4, 1.0]])


def synthetic(rng, n_points, n_lines, outlier_ratio, noise=0.3):
    """Matched points and segments under H_TRUE; a fraction of each replaced by random ones.
    The segments of image 1 are the mapped lines with *different* end points (slid along)."""
    w, h = SIZE
    p0 = rng.uniform([20, 20], [w - 20, h - 20], (n_points, 2))
    p1 = warp_points(H_TRUE, p0) + rng.normal(0, noise, (n_points, 2))
    a = rng.uniform([20, 20], [w - 20, h - 20], (n_lines, 2))
    ang = rng.uniform(0, np.pi, n_lines)
    d = np.stack([np.cos(ang), np.sin(ang)], 1) * rng.uniform(40, 120, (n_lines, 1))
    s0 = np.stack([a, a + d], 1)
    m = warp_points(H_TRUE, s0.reshape(-1, 2)).reshape(-1, 2, 2)
    t = rng.uniform(-0.2, 0.2, (n_lines, 2, 1)) + np.array([[0.0], [1.0]])  # slide end points
    s1 = m[:, :1] + t * (m[:, 1:] - m[:, :1]) + rng.normal(0, noise, (n_lines, 2, 2))
    bad_p = rng.random(n_points) < outlier_ratio
    p1[bad_p] = rng.uniform([0, 0], [w, h], (bad_p.sum(), 2))
    bad_l = rng.random(n_lines) < outlier_ratio
    s1[bad_l] = rng.uniform([0, 0], [w, h], (bad_l.sum(), 2, 2))
    return p0, p1, s0, s1, ~bad_p, ~bad_l


@pytest.mark.parametrize(
    "n_points,n_lines,noise,tol",
    [
        (60, 40, 0.3, 0.5),
        (0, 30, 0.3, 1.0),
        (3, 12, 0.3, 2.0),
        (3, 12, 0.0, 1e-6),
        (0, 8, 0.0, 1e-6),
    ],
)
def test_recovers_truth_with_outliers(n_points, n_lines, noise, tol):
    """Exact data: the truth to 1e-6 px; noisy: within what the inlier count allows."""
    rng = np.random.default_rng(n_points + n_lines)
    p0, p1, s0, s1, good_p, good_l = synthetic(rng, n_points, n_lines, 0.35, noise)
    est = estimate_homography(p0, p1, "point_line", 2.0, lines0=s0, lines1=s1)
    assert est.success
    assert homography_corner_error(est.H, H_TRUE, SIZE) < tol
    # a random "outlier" can land within the threshold by chance: allow one per set
    assert (est.inliers != good_p).sum() <= 1
    assert (est.line_inliers != good_l).sum() <= 1


def test_points_only_matches_opencv_quality_and_lines_are_checked():
    rng = np.random.default_rng(1)
    p0, p1, *_ = synthetic(rng, 80, 0, 0.4)
    est = estimate_homography(p0, p1, "point_line", 2.0)
    assert est.success and est.line_inliers is None
    assert homography_corner_error(est.H, H_TRUE, SIZE) < 1.0
    with pytest.raises(EstimatorError, match="takes no lines"):
        estimate_homography(p0, p1, "opencv", lines0=np.zeros((1, 2, 2)))
    with pytest.raises(EstimatorError, match="one to one"):
        estimate_homography(
            p0, p1, "point_line", lines0=np.zeros((2, 2, 2)), lines1=np.zeros((1, 2, 2))
        )
    with pytest.raises(EstimatorError, match="only estimates homographies"):
        from tiepoint.estimators import estimate_fundamental

        estimate_fundamental(p0, p1, "point_line")


def test_too_few_and_degenerate_is_a_failure_not_an_error():
    s = np.array([[[0, 0], [0, 0]], [[1, 1], [1, 1]]], float)  # zero-length segments
    est = estimate_homography(np.zeros((2, 2)), np.zeros((2, 2)), "point_line", lines0=s, lines1=s)
    assert not est.success and est.line_inliers.tolist() == [False, False]
