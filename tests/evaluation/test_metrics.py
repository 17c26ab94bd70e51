"""AUC and summary keys against hand-computed values and an independent numerical integral."""

import math

import numpy as np
import pytest

from tiepoint.evaluation.metrics import (
    error_auc,
    format_threshold,
    pick_best_threshold,
    summarize,
)


def test_auc_perfect_and_failed():
    assert error_auc([0, 0, 0], [1, 5]) == [1.0, 1.0]
    assert error_auc([math.inf] * 4, [1, 5]) == [0.0, 0.0]
    assert error_auc([], [5]) == [0.0]


def test_auc_single_error():
    # recall rises linearly from (0,0) to (e,1), then stays 1: area = e/2 + (t - e)
    assert error_auc([1.0], [4.0])[0] == pytest.approx(1 - 1 / 8)


def test_auc_hand_computed_staircase():
    # points (0,0) (1,.25) (2,.5) (3,.75), then flat to t=4; the error 5 lies beyond
    assert error_auc([3, 1, 5, 2], [4])[0] == pytest.approx((0.125 + 0.375 + 0.625 + 0.75) / 4)


def test_auc_nan_counts_as_failure():
    assert error_auc([1.0, float("nan")], [4]) == error_auc([1.0, math.inf], [4])


def test_auc_matches_an_independent_integral():
    rng = np.random.default_rng(0)
    errors = np.r_[rng.exponential(3, 200), [math.inf] * 20]
    for t in (1, 5, 10):
        x = np.linspace(0, t, 200001)
        e = np.r_[0, np.sort(errors)]
        r = np.arange(len(e)) / (len(e) - 1)
        finite = np.isfinite(e)
        curve = np.interp(x, e[finite], r[finite])  # piecewise-linear recall, flat after the last
        ref = curve.mean()  # ≈ (1/t) ∫0^t recall
        assert error_auc(errors, [t])[0] == pytest.approx(ref, abs=1e-4)


def test_summary_keys_follow_the_field_naming():
    res = {
        "H_error_ransac": [0.5, 2.0, math.inf],
        "num_matches": [10, 20, 30],
        "prec@3px": [1, 0.5, np.nan],
    }
    s = summarize(res, ["H_error_ransac"], [1, 3, 5], "px", stat="median")
    assert set(s) == {
        "mH_error_ransac",
        "mnum_matches",
        "mprec@3px",
        "H_error_ransac@1px",
        "H_error_ransac@3px",
        "H_error_ransac@5px",
        "H_error_ransac_mAA",
    }
    assert s["mnum_matches"] == 20 and s["mprec@3px"] == 0.75  # NaN (no matches) is skipped
    assert s["H_error_ransac@3px"] == pytest.approx(
        round(error_auc(res["H_error_ransac"], [3])[0], 4)
    )
    s = summarize(
        {"rel_pose_error": [1.0, 30.0]}, ["rel_pose_error"], [5, 10, 20], "°", stat="mean"
    )
    assert "rel_pose_error@10°" in s and s["mrel_pose_error"] == 15.5
    assert format_threshold(5e-4) == "5e-4" and format_threshold(3.0) == "3"


def test_best_threshold_is_the_one_with_the_highest_mean_auc():
    errs = {0.5: [1, 2, 50], 1.0: [0.5, 1, 2], 2.0: [3, 4, 5]}
    assert pick_best_threshold(errs, [5, 10, 20]) == 1.0
