"""DKM's own evaluation protocol (`data.protocol=dkm` of hpatches and megadepth1500), as DKM's
benchmarks compute it (Parskatt/DKM dkm/benchmarks/*), on the matches in predictions.h5.

- hpatches: OpenCV RANSAC homography on the matches in original pixels, threshold
  3·min(w1, h1)/480 px, confidence 0.99999; error = mean distance of the 4 corners (0, 0)…(w−1, h−1)
  of image 0 warped by the estimate and by the GT, divided by min(w1, h1)/480 (i.e. at 480 px
  short side; a failed estimate is H = diag(0, 0, 1), as in DKM); AUC@3/5/10 px.
- megadepth1500: keypoints and K scaled to 1200 px long side; 5 runs per pair, each on a freshly
  shuffled order of the matches (seeded here), of OpenCV's essential-matrix RANSAC in normalised
  coordinates at 0.5/(mean|K0[:2,:2]| + mean|K1[:2,:2]|), confidence 0.99999, then recoverPose;
  error max(R, t) in degrees (90 on failure); AUC@5/10/20° over all 5·N runs.
The 5000 matches are the pipeline's (`dense.num_matches`, DKM's default); the model's input size
is its preset's. DKM takes pixel corners at integers; the points here are tiepoint's (centres at
integers), the GT converted accordingly at load time.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..geometry.homography import warp_points
from ..geometry.pose import relative_pose_error
from . import metrics

RUNS = 5
SEED = 0
LONG_SIDE = 1200


def hpatches_error(pts0, pts1, H_gt, size0, size1) -> float:
    w0, h0 = size0
    scale = min(size1) / 480.0
    H = None
    if len(pts0) >= 4:
        H, _ = cv2.findHomography(
            pts0, pts1, method=cv2.RANSAC, ransacReprojThreshold=3 * scale, confidence=0.99999
        )
    if H is None:
        H = np.diag([0.0, 0.0, 1.0])
    c = np.array([[0, 0], [0, h0 - 1], [w0 - 1, 0], [w0 - 1, h0 - 1]], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        d = np.linalg.norm(warp_points(H, c) - warp_points(H_gt, c), axis=-1).mean() / scale
    return float(d) if np.isfinite(d) else float("inf")


def megadepth_errors(pts0, pts1, K0, K1, T_0to1, size0, size1, rng) -> list[float]:
    s0, s1 = LONG_SIDE / max(size0), LONG_SIDE / max(size1)
    K0, K1 = np.array(K0, np.float64), np.array(K1, np.float64)
    K0[:2] *= s0
    K1[:2] *= s1
    th = 0.5 / (np.mean(np.abs(K0[:2, :2])) + np.mean(np.abs(K1[:2, :2])))
    # to normalised coordinates (DKM: K⁻¹ on pixels scaled by s; tiepoint's K is centre-based,
    # so the pixel-corner offset cancels: (x + 0.5)s and K's cx + 0.5 scale alike)
    n0 = (np.asarray(pts0, np.float64) * s0 - K0[:2, 2]) / np.diag(K0)[:2]
    n1 = (np.asarray(pts1, np.float64) * s1 - K1[:2, 2]) / np.diag(K1)[:2]
    errors = []
    for _ in range(RUNS):
        perm = rng.permutation(len(n0))
        n0, n1 = n0[perm], n1[perm]
        R = t = None
        if len(n0) >= 5:
            E, mask = cv2.findEssentialMat(
                n0, n1, np.eye(3), threshold=th, prob=0.99999, method=cv2.RANSAC
            )
            best = 0
            if E is not None:
                for e in np.split(E, len(E) // 3):
                    n, R_, t_, _ = cv2.recoverPose(e, n0, n1, np.eye(3), 1e9, mask=mask.copy())
                    if n > best:
                        best, R, t = n, R_, t_
        if R is None:
            errors.append(90.0)
        else:
            errors.append(max(relative_pose_error(T_0to1, R, t.ravel())))
    return errors


def evaluate(bench, task: str, pairs, load) -> tuple[dict, dict]:
    """Per-pair results and summary of `task` under DKM's protocol; `load(pair)` → MatchResult."""
    rng = np.random.default_rng(SEED)
    res: dict[str, list] = {"names": [], "groups": [], "num_matches": []}
    key = "H_error_ransac" if task == "homography" else "rel_pose_error"
    all_errors = []
    for p in pairs:
        d = load(p)
        pts0, pts1 = d.points0.astype(np.float64), d.points1.astype(np.float64)
        if task == "homography":
            errs = [hpatches_error(pts0, pts1, p.H_0to1, d.image_size0, d.image_size1)]
        else:
            errs = megadepth_errors(
                pts0, pts1, p.K0, p.K1, p.T_0to1, d.image_size0, d.image_size1, rng
            )
            for k, e in enumerate(errs):
                res.setdefault(f"{key}_run{k}", []).append(e)
        res["names"].append(p.name)
        res["groups"].append(p.group)
        res["num_matches"].append(len(pts0))
        res.setdefault(key, []).append(float(np.mean(errs)))  # per pair: mean over the runs
        all_errors += errs
    ths = bench.dkm_auc_thresholds
    unit = "px" if task == "homography" else "°"
    summary = {"protocol": "dkm", "mnum_matches": float(np.mean(res["num_matches"]))}
    for t, a in zip(ths, metrics.error_auc(all_errors, ths)):
        summary[f"{key}@{metrics.format_threshold(t)}{unit}"] = round(a, 4)
    return res, summary
