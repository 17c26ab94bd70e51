"""Fundamental-matrix estimation: synthetic scenes with a known F and outliers, and real pose pairs
whose ground-truth F comes from K, R, t."""

from pathlib import Path

import numpy as np
import pytest
from helpers import rotation

from tiepoint.estimators import DEFAULT_THRESHOLDS, ESTIMATORS, estimate_fundamental
from tiepoint.geometry.epipolar import fundamental_from_pose, sym_epipolar_distance
from tiepoint.types import MatchResult


def scene(n=400, outlier_ratio=0.3, noise=0.3, seed=0):
    """Two cameras viewing a 3-D point cloud: noisy projections, the first k matches replaced."""
    rng = np.random.default_rng(seed)
    K0 = np.array([[700.0, 0, 320], [0, 710, 240], [0, 0, 1]])
    K1 = np.array([[560.0, 0, 300], [0, 560, 250], [0, 0, 1]])
    R, t = rotation(4, -15, 6), np.array([1.0, 0.3, 0.2])
    X = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(4, 12, n)]
    x0, x1 = X @ K0.T, (X @ R.T + t) @ K1.T
    q0, q1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
    p0 = q0 + rng.normal(0, noise, (n, 2))
    p1 = q1 + rng.normal(0, noise, (n, 2))
    k = int(outlier_ratio * n)
    p1[:k] = rng.uniform([0, 0], [640, 480], (k, 2))
    F = fundamental_from_pose(K0, K1, R, t)
    outlier = np.zeros(n, bool)
    outlier[:k] = sym_epipolar_distance(p0[:k], p1[:k], F) > 5
    return p0, p1, q0, q1, F / np.linalg.norm(F), outlier


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_recovers_the_true_F_up_to_scale_and_rejects_outliers(estimator):
    p0, p1, q0, q1, F, outlier = scene()
    est = estimate_fundamental(p0, p1, estimator=estimator)
    assert est.success and est.F.shape == (3, 3) and est.F.dtype == np.float64
    assert np.isclose(np.linalg.norm(est.F), 1.0)
    assert abs(np.linalg.det(est.F)) < 1e-6 * np.abs(est.F).max() ** 3  # rank 2
    # equal up to scale: the sign-aligned unit matrices agree
    Fe = est.F * np.sign(np.sum(est.F * F))
    assert np.abs(Fe - F).max() < 0.02, np.abs(Fe - F).max()
    # and the exact (noise-free) correspondences lie on its epipolar lines
    assert np.median(sym_epipolar_distance(q0, q1, est.F)) < 0.3
    assert est.inliers.shape == (len(p0),) and est.inliers.dtype == bool
    assert not (est.inliers & outlier).any()
    assert est.inliers[~outlier].mean() > 0.85


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_too_few_points_and_noise_are_failures_not_exceptions(estimator):
    p0, p1, *_ = scene(n=7, outlier_ratio=0)
    est = estimate_fundamental(p0, p1, estimator=estimator)
    assert est.F is None and est.inliers.shape == (7,) and not est.inliers.any()
    rng = np.random.default_rng(1)
    est = estimate_fundamental(*rng.uniform(0, 500, (2, 12, 2)), estimator=estimator)
    assert est.inliers.shape == (12,)


def test_threshold_and_default():
    assert DEFAULT_THRESHOLDS["fundamental"]["opencv"] == 1.0  # GIM's demo
    p0, p1, *_ = scene(noise=1.0, outlier_ratio=0.0)
    tight = estimate_fundamental(p0, p1, threshold=0.2).num_inliers
    loose = estimate_fundamental(p0, p1, threshold=4.0).num_inliers
    assert tight < loose and loose >= 0.95 * len(p0)


def test_match_result_fundamental():
    p0, p1, q0, q1, F, outlier = scene()
    k = len(p0)
    idx = np.stack([np.arange(k)] * 2, -1)
    r = MatchResult(p0, p1, idx, np.ones(k, np.float32), (640, 480), (640, 480))
    Fe, inl = r.fundamental()
    assert np.median(sym_epipolar_distance(q0, q1, Fe)) < 0.3
    assert not (inl & outlier).any()


def pose_pairs(data_dir: Path, prefix: str):
    for line in (data_dir / "pose" / "pairs.txt").read_text().splitlines():
        if line.startswith(prefix):
            a, b, *v = line.split()
            v = np.array(v, float)
            K0 = np.array([[v[0], 0, v[2]], [0, v[1], v[3]], [0, 0, 1]])
            K1 = np.array([[v[4], 0, v[6]], [0, v[5], v[7]], [0, 0, 1]])
            yield a, b, K0, K1, v[8:17].reshape(3, 3), v[17:20]


@pytest.fixture(scope="module")
def kitti_matches(data_dir):
    import tiepoint

    a, b, K0, K1, R, t = next(pose_pairs(data_dir, "kitti_seq1/000010"))
    root = data_dir / "pose"
    r = tiepoint.match(root / a, root / b, pipeline="sift+nn", resize=0)
    return r, fundamental_from_pose(K0, K1, R, t)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_real_pair_inliers_agree_with_the_ground_truth_F(kitti_matches, estimator):
    """RootSIFT matches on a KITTI pair: the F inliers lie on the GT epipolar lines (from K, R, t),
    and the matches the GT F accepts are accepted by the estimated F too."""
    r, F_gt = kitti_matches
    est = estimate_fundamental(r.points0, r.points1, estimator=estimator)
    assert est.success and est.num_inliers > 200, est.num_inliers
    p0, p1 = r.points0[est.inliers], r.points1[est.inliers]
    d_gt = sym_epipolar_distance(p0, p1, F_gt)
    assert np.median(d_gt) < 1.0 and np.mean(d_gt < 3.0) > 0.9, np.median(d_gt)
    # GT-epipolar-consistent matches (< 1 px under GT F) are nearly all within 2 px of the estimate
    good = sym_epipolar_distance(r.points0, r.points1, F_gt) < 1.0
    d_est = sym_epipolar_distance(r.points0[good], r.points1[good], est.F)
    assert np.mean(d_est < 2.0) > 0.9


def test_cli_match_colours_fundamental_inliers(
    data_dir, kitti_matches, tmp_path, capsys, monkeypatch
):
    """`tiepoint match --color-inliers fundamental` counts and draws the F inliers (the drawing
    functions are replaced by recorders: test_cli.py covers the pictures themselves)."""
    import re

    import tiepoint.viz.matches
    import tiepoint.viz.warp
    from tiepoint.cli import main

    drawn = {}
    monkeypatch.setattr(tiepoint.viz.matches, "plot_matches", lambda *a, **k: drawn.update(a=a))
    monkeypatch.setattr(tiepoint.viz.warp, "plot_warp", lambda *a, **k: None)
    root = data_dir / "pose" / "kitti_seq1"
    args = ["match", str(root / "000010.png"), str(root / "000015.png"), "--pipeline", "sift+nn"]
    args += ["--resize", "0", "--out", str(tmp_path), "--color-inliers", "fundamental"]
    assert main(args) == 0
    n = int(re.search(r"(\d+) fundamental-matrix inliers", capsys.readouterr().out).group(1))
    r = kitti_matches[0]  # the same pair, pipeline and size through the API
    est = estimate_fundamental(r.points0, r.points1)
    assert n == est.num_inliers > 200
    np.testing.assert_array_equal(drawn["a"][5], est.inliers)  # the colours are the F inliers
