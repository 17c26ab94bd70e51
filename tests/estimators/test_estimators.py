"""Each estimator against synthetic data with a known model, noise and gross outliers."""

import numpy as np
import pytest
from helpers import rotation

from tiepoint.errors import EstimatorError
from tiepoint.estimators import (
    DEFAULT_THRESHOLDS,
    ESTIMATORS,
    estimate_homography,
    estimate_relative_pose,
)
from tiepoint.geometry.homography import homography_corner_error, warp_points


def homography_data(n=300, outlier_ratio=0.3, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    H = np.array([[0.9, 0.1, 30.0], [-0.15, 1.1, -20.0], [2e-4, -1e-4, 1.0]])
    p0 = rng.uniform([0, 0], [640, 480], (n, 2))
    p1 = warp_points(H, p0) + rng.normal(0, noise, (n, 2))
    k = int(outlier_ratio * n)
    p1[:k] = rng.uniform([0, 0], [640, 480], (k, 2))
    is_outlier = np.zeros(n, bool)
    is_outlier[:k] = np.linalg.norm(p1[:k] - warp_points(H, p0[:k]), axis=1) > 10
    return p0, p1, H, is_outlier


def pose_data(n=300, outlier_ratio=0.3, noise=0.3, seed=0):
    rng = np.random.default_rng(seed)
    K0 = np.array([[600.0, 0, 320], [0, 620, 240], [0, 0, 1]])
    K1 = np.array([[500.0, 0, 300], [0, 500, 250], [0, 0, 1]])
    R = rotation(5, -12, 3)
    t = np.array([1.0, 0.2, 0.1])
    t /= np.linalg.norm(t)
    X = np.c_[rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(4, 10, n)]
    x0 = X @ K0.T
    x1 = (X @ R.T + t) @ K1.T
    p0 = x0[:, :2] / x0[:, 2:] + rng.normal(0, noise, (n, 2))
    p1 = x1[:, :2] / x1[:, 2:] + rng.normal(0, noise, (n, 2))
    k = int(outlier_ratio * n)
    p1[:k] = rng.uniform([0, 0], [600, 500], (k, 2))
    return p0, p1, K0, K1, R, t, k


def angle_deg(R):
    return np.rad2deg(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1)))


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_homography_recovers_model_and_rejects_outliers(estimator):
    p0, p1, H, is_outlier = homography_data()
    est = estimate_homography(p0, p1, estimator=estimator)
    assert est.success and est.H.shape == (3, 3) and est.H.dtype == np.float64
    err = homography_corner_error(est.H, H, (640, 480))
    assert err < 1.5, err
    assert est.inliers.shape == (len(p0),) and est.inliers.dtype == bool
    assert not (est.inliers & is_outlier).any()  # no true gross outlier is accepted
    assert est.inliers[~is_outlier].mean() > 0.9


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_relative_pose_recovers_R_and_t_direction(estimator):
    p0, p1, K0, K1, R, t, k = pose_data()
    est = estimate_relative_pose(p0, p1, K0, K1, estimator=estimator)
    assert est.success
    assert angle_deg(est.R.T @ R) < 1.0
    assert np.isclose(np.linalg.norm(est.t), 1.0)
    # the sign of t is recovered by the cheirality check, so compare without min(e, 180-e)
    assert np.rad2deg(np.arccos(np.clip(est.t @ t, -1, 1))) < 3.0
    assert est.inliers[k:].mean() > 0.8
    assert (
        est.inliers[:k].mean() < 0.1
    )  # random points rarely lie within ~1 px of their epipolar line


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_too_few_points_is_a_failure_not_an_exception(estimator):
    p0, p1, H, _ = homography_data(n=3, outlier_ratio=0)
    est = estimate_homography(p0, p1, estimator=estimator)
    assert est.H is None and est.inliers.shape == (3,) and not est.inliers.any()
    p0, p1, K0, K1, *_ = pose_data(n=4, outlier_ratio=0)
    est = estimate_relative_pose(p0, p1, K0, K1, estimator=estimator)
    assert est.R is None and est.t is None and est.inliers.shape == (4,) and not est.inliers.any()
    est = estimate_relative_pose(np.zeros((0, 2)), np.zeros((0, 2)), K0, K1, estimator=estimator)
    assert not est.success and est.inliers.shape == (0,)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_pure_noise_does_not_crash(estimator):
    rng = np.random.default_rng(1)
    p0, p1 = rng.uniform(0, 500, (2, 12, 2))
    K = np.array([[500.0, 0, 250], [0, 500, 250], [0, 0, 1]])
    h = estimate_homography(p0, p1, estimator=estimator)
    assert h.inliers.shape == (12,)
    e = estimate_relative_pose(p0, p1, K, K, estimator=estimator)
    assert e.inliers.shape == (12,)


def test_threshold_matters_for_inlier_count():
    p0, p1, H, _ = homography_data(noise=1.0, outlier_ratio=0.0)
    tight = estimate_homography(p0, p1, "opencv", threshold=0.3).num_inliers
    loose = estimate_homography(p0, p1, "opencv", threshold=5.0).num_inliers
    assert tight < loose and loose >= 0.95 * len(p0)


def test_opencv_usac_magsac_option():
    p0, p1, H, is_outlier = homography_data()
    est = estimate_homography(p0, p1, "opencv", method="usac_magsac")
    assert est.success and not (est.inliers & is_outlier).any()


def test_errors_are_clear():
    p0, p1, *_ = homography_data(n=10)
    with pytest.raises(EstimatorError, match="valid: opencv, poselib, pycolmap"):
        estimate_homography(p0, p1, estimator="magsac")
    with pytest.raises(EstimatorError, match="did you mean 'poselib'"):
        estimate_homography(p0, p1, estimator="poselb")
    with pytest.raises(EstimatorError, match="sweep"):
        estimate_homography(p0, p1, threshold=-1)
    with pytest.raises(EstimatorError, match="same length"):
        estimate_homography(p0, p1[:5])
    with pytest.raises(EstimatorError, match=r"\(K, 2\)"):
        estimate_homography(p0.ravel(), p1)
    with pytest.raises(EstimatorError, match="NaN"):
        estimate_homography(np.full((5, 2), np.nan), p1[:5])
    with pytest.raises(EstimatorError, match="K0"):
        estimate_relative_pose(p0, p1, np.eye(2), np.eye(3))
    with pytest.raises(EstimatorError, match="unknown opencv method"):
        estimate_homography(p0, p1, method="nope")


def test_defaults_are_documented_per_estimator():
    assert set(DEFAULT_THRESHOLDS["homography"]) == set(ESTIMATORS)
    assert DEFAULT_THRESHOLDS["relative_pose"]["opencv"] == 0.5  # Glue Factory's value


def test_accepts_torch_tensors():
    torch = pytest.importorskip("torch")
    p0, p1, H, _ = homography_data()
    est = estimate_homography(torch.from_numpy(p0).float(), torch.from_numpy(p1).float())
    assert est.success
