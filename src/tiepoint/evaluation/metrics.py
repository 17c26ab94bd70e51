"""Per-pair metrics and their summaries, in the field's naming (Glue Factory / SuperGlue).

AUC is SuperGlue's / Glue Factory's `cal_error_auc`: the area under the cumulative recall curve
of the errors (piecewise linear between sorted errors, starting at (0, 0)), up to a threshold,
divided by it. Failures carry an infinite error, so they only lower the recall.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..estimators import estimate_homography, estimate_relative_pose
from ..geometry.epipolar import essential_from_pose, normalize_points, sym_epipolar_distance
from ..geometry.homography import fit_homography_dlt, homography_corner_error, sym_homography_error
from ..geometry.pose import relative_pose_error

SWEEP_THRESHOLDS = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)
# Descriptor Reasoning's evaluation (`DR:reasoning/eval/scannet1500.py`): 0.5..6 px, best mean AUC
SWEEP6_THRESHOLDS = tuple(0.5 * k for k in range(1, 13))
EPI_THRESHOLDS = (1e-4, 5e-4, 1e-3)


def error_auc(errors: Iterable[float], thresholds: Sequence[float]) -> list[float]:
    """AUC of the cumulative error curve at each threshold, as a fraction in [0, 1]."""
    errors = np.asarray(list(errors), np.float64)
    if errors.size == 0:
        return [0.0 for _ in thresholds]
    errors = np.sort(np.where(np.isnan(errors), np.inf, errors))
    recall = np.arange(1, len(errors) + 1) / len(errors)
    errors = np.r_[0.0, errors]
    recall = np.r_[0.0, recall]
    aucs = []
    for t in thresholds:
        n = int(np.searchsorted(errors, t))  # errors[:n] < t (an error equal to t does not count)
        r = np.r_[recall[:n], recall[n - 1]]
        e = np.r_[errors[:n], t]
        aucs.append(float(np.trapezoid(r, x=e) / t))
    return aucs


def format_threshold(t: float) -> str:
    """3.0 → '3', 0.5 → '0.5', 5e-4 → '5e-4' (the spelling of the field's summary keys)."""
    if 0 < abs(t) < 0.01:
        return f"{t:.0e}".replace("e-0", "e-")
    return f"{t:g}"


def eval_homography_pair(
    pts0: np.ndarray,
    pts1: np.ndarray,
    scores: np.ndarray,
    H_gt: np.ndarray,
    size0,
    num_keypoints: float,
) -> dict:
    """Estimator-independent metrics of one homography pair (match precision, DLT error)."""
    res = {"num_matches": len(pts0), "num_keypoints": float(num_keypoints)}
    if len(pts0):
        err = sym_homography_error(pts0, pts1, H_gt)
        res["prec@1px"] = float((err < 1).mean())
        res["prec@3px"] = float((err < 3).mean())
    else:
        res["prec@1px"] = res["prec@3px"] = float("nan")
    H_dlt = fit_homography_dlt(pts0, pts1, scores)
    res["H_error_dlt"] = homography_corner_error(H_dlt, H_gt, size0)
    return res


def eval_homography_robust(
    pts0, pts1, H_gt, size0, estimator: str, threshold: float, **options
) -> dict:
    est = estimate_homography(pts0, pts1, estimator=estimator, threshold=threshold, **options)
    n = est.num_inliers
    out = {
        "H_error_ransac": homography_corner_error(est.H, H_gt, size0),
        "ransac_inl": n,
        "ransac_inl%": n / len(pts0) if len(pts0) else 0.0,
    }
    if est.line_inliers is not None:  # `point_line` with matched lines
        out["ransac_line_inl"] = int(est.line_inliers.sum())
    return out


def eval_pose_pair(pts0, pts1, K0, K1, T_0to1, num_keypoints: float) -> dict:
    """Estimator-independent metrics of one relative-pose pair (epipolar precision)."""
    res = {"num_matches": len(pts0), "num_keypoints": float(num_keypoints)}
    if len(pts0):
        E = essential_from_pose(T_0to1[:3, :3], T_0to1[:3, 3])
        d = sym_epipolar_distance(normalize_points(pts0, K0), normalize_points(pts1, K1), E)
        for t in EPI_THRESHOLDS:
            res[f"epi_prec@{format_threshold(t)}"] = float((d < t).mean())
    else:
        for t in EPI_THRESHOLDS:
            res[f"epi_prec@{format_threshold(t)}"] = float("nan")
    return res


def eval_pose_robust(
    pts0, pts1, K0, K1, T_0to1, estimator: str, threshold: float, **options
) -> dict:
    est = estimate_relative_pose(
        pts0, pts1, K0, K1, estimator=estimator, threshold=threshold, **options
    )
    e_R, e_t = relative_pose_error(T_0to1, est.R, est.t)
    n = est.num_inliers
    return {
        "rel_pose_error": max(e_R, e_t),
        "R_error": e_R,
        "t_error": e_t,
        "ransac_inl": n,
        "ransac_inl%": n / len(pts0) if len(pts0) else 0.0,
    }


def _stat(values, how: str) -> float | None:
    a = np.asarray(values, np.float64)
    if a.size == 0 or np.isnan(a).all():
        return None
    a = a[~np.isnan(a)]
    v = np.median(a) if how == "median" else np.mean(a)
    return round(float(v), 4) if np.isfinite(v) else float(v)


def pick_best_threshold(errors_by_th: dict[float, Sequence[float]], auc_thresholds) -> float:
    """The RANSAC threshold whose AUCs have the highest mean (Glue Factory's sweep; the test set
    itself tunes it, so report it next to the numbers)."""
    return max(errors_by_th, key=lambda th: np.mean(error_auc(errors_by_th[th], auc_thresholds)))


def summarize(
    results: dict[str, list],
    auc_keys: Sequence[str],
    auc_thresholds,
    unit: str,
    stat: str = "median",
    median_keys: Sequence[str] = (),
) -> dict:
    """`m<key>` statistics over pairs (`stat`: median or mean; `median_keys` always median) and
    `<error>@<t><unit>` AUCs with their mean `<error>_mAA`."""
    out = {}
    for key, values in results.items():
        if key in ("names", "groups"):
            continue
        out[f"m{key}"] = _stat(values, "median" if key in median_keys else stat)
    for key in auc_keys:
        aucs = error_auc(results[key], auc_thresholds)
        for t, a in zip(auc_thresholds, aucs):
            out[f"{key}@{format_threshold(t)}{unit}"] = round(a, 4)
        out[f"{key}_mAA"] = round(float(np.mean(aucs)), 4)
    return out
