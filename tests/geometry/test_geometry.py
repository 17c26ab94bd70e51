"""Error measures against hand-computed (analytic) values."""

import math

import numpy as np
import pytest
from helpers import rotation

from tiepoint.geometry import (
    angle_error_rotation,
    angle_error_vector,
    essential_from_pose,
    fit_homography_dlt,
    fundamental_from_pose,
    homography_corner_error,
    relative_pose_error,
    scale_homography,
    scale_intrinsics,
    sym_epipolar_distance,
    sym_homography_error,
    warp_points,
)
from tiepoint.geometry.epipolar import normalize_points


def translation(tx, ty):
    return np.array([[1, 0, tx], [0, 1, ty], [0, 0, 1.0]])


def test_corner_error_of_a_translation_is_its_length():
    assert homography_corner_error(translation(3, 4), np.eye(3), (640, 480)) == pytest.approx(5.0)


def test_corner_error_is_the_mean_over_the_four_corners():
    W, H = 640, 480
    # scaling by 2 about the origin moves corner (x, y) by (x, y): 0, W, sqrt(W²+H²), H
    err = homography_corner_error(np.diag([2.0, 2.0, 1.0]), np.eye(3), (W, H))
    assert err == pytest.approx((0 + W + math.hypot(W, H) + H) / 4)


def test_corner_error_failure_is_inf():
    assert homography_corner_error(None, np.eye(3), (10, 10)) == math.inf


def test_sym_homography_error_forward_and_backward():
    p0 = np.array([[10.0, 20.0], [100.0, 5.0]])
    H = translation(3, 4)
    p1 = p0 + [3, 4] + [1, 0]  # 1 px off in both directions
    assert np.allclose(sym_homography_error(p0, p1, H), 1.0)
    H2 = np.diag([2.0, 2.0, 1.0])
    p1 = 2 * p0 + [2, 0]  # 2 px forward error, 1 px once mapped back by H⁻¹
    assert np.allclose(sym_homography_error(p0, p1, H2), 1.5)


def test_scale_homography_commutes_with_resizing():
    rng = np.random.default_rng(0)
    H = np.array([[0.9, 0.05, 12.0], [-0.1, 1.1, 3.0], [1e-4, 2e-4, 1.0]])
    s0, s1 = np.array([0.5, 0.5]), np.array([0.25, 0.3])
    p = rng.uniform(0, 500, (20, 2))
    resized = lambda q, s: (q + 0.5) * s - 0.5
    Hs = scale_homography(H, s0, s1)
    assert np.allclose(warp_points(Hs, resized(p, s0)), resized(warp_points(H, p), s1))


def test_dlt_exact_weighted_and_degenerate():
    rng = np.random.default_rng(0)
    H = np.array([[0.9, 0.05, 12.0], [-0.1, 1.1, 3.0], [1e-4, 2e-4, 1.0]])
    p0 = rng.uniform(0, 500, (30, 2))
    p1 = warp_points(H, p0)
    assert np.allclose(fit_homography_dlt(p0, p1), H, atol=1e-8)
    p1_bad = p1.copy()
    p1_bad[:5] += 80  # gross outliers...
    assert not np.allclose(fit_homography_dlt(p0, p1_bad), H, atol=1e-3)
    w = np.ones(30)
    w[:5] = 0  # ...that weight 0 removes exactly
    assert np.allclose(fit_homography_dlt(p0, p1_bad, w), H, atol=1e-8)
    assert fit_homography_dlt(p0[:3], p1[:3]) is None
    line = np.c_[np.arange(10.0), 2 * np.arange(10.0)]
    assert fit_homography_dlt(line, line + 1) is None


def test_epipolar_distance_for_a_sideways_translation():
    # X1 = X0 + (1, 0, 0): epipolar lines are horizontal, distance = |y0 - y1| in both images
    E = essential_from_pose(np.eye(3), np.array([1.0, 0, 0]))
    p0 = np.array([[0.1, 0.2], [0.3, -0.4]])
    p1 = np.array([[0.5, 0.2], [-0.2, -0.1]])
    assert np.allclose(sym_epipolar_distance(p0, p1, E), [0.0, 0.3])
    assert np.allclose(sym_epipolar_distance(p0, p1, E, squared=True), [0.0, 2 * 0.3**2])


def test_epipolar_distance_zero_for_true_projections():
    rng = np.random.default_rng(1)
    K0 = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    K1 = np.array([[450.0, 0, 300], [0, 450, 260], [0, 0, 1]])
    R, t = rotation(rz=10) @ rotation(rz=0), np.array([0.3, -0.1, 1.0])
    X = np.c_[rng.uniform(-1, 1, (50, 2)), rng.uniform(3, 6, 50)]
    x0, x1 = X @ K0.T, (X @ R.T + t) @ K1.T
    p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
    E = essential_from_pose(R, t)
    assert (
        np.abs(sym_epipolar_distance(normalize_points(p0, K0), normalize_points(p1, K1), E)).max()
        < 1e-10
    )
    F = fundamental_from_pose(K0, K1, R, t)
    assert np.abs(sym_epipolar_distance(p0, p1, F)).max() < 1e-7
    # moving a point 2 px perpendicular to its (horizontal-ish) line gives a pixel error of ~2 in F
    d = sym_epipolar_distance(p0[:1], p1[:1] + [0, 2], F)
    assert 0.5 < d[0] < 2.5


def test_rotation_and_translation_angles():
    assert angle_error_rotation(rotation(rz=10), np.eye(3)) == pytest.approx(10)
    assert angle_error_rotation(rotation(rz=-170), rotation(rz=10)) == pytest.approx(180)
    assert angle_error_vector(np.array([1.0, 0, 0]), np.array([0, 2.0, 0])) == pytest.approx(90)
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation(rz=5), [1.0, 0, 0]
    # t opposite to GT: E cannot tell the sign, so the error is 0, and 170° becomes 10°
    assert relative_pose_error(T, rotation(rz=5), np.array([-3.0, 0, 0])) == pytest.approx((0, 0))
    t170 = np.array([np.cos(np.deg2rad(170)), np.sin(np.deg2rad(170)), 0])
    assert relative_pose_error(T, rotation(rz=0), t170) == pytest.approx((5, 10))
    assert relative_pose_error(T, None, None) == (math.inf, math.inf)


def test_scale_intrinsics_matches_resizing_points():
    K = np.array([[500.0, 0, 319.5], [0, 500, 239.5], [0, 0, 1]])
    X = np.array([[0.2, -0.1, 2.0], [1.0, 0.5, 4.0]])
    s = np.array([0.5, 0.25])
    p = X @ K.T
    p = p[:, :2] / p[:, 2:]
    q = X @ scale_intrinsics(K, s).T
    assert np.allclose(q[:, :2] / q[:, 2:], (p + 0.5) * s - 0.5)
