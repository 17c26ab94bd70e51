"""OpenCV backend: `findHomography` (RANSAC or USAC variants) and `findEssentialMat` + `recoverPose`.

Defaults follow Glue Factory's OpenCV estimators so our numbers are comparable with theirs:
H by RANSAC (3000 iterations, confidence 0.995); E by RANSAC on K-normalised points with the
pixel threshold divided by the mean focal length (confidence 0.99999). F by MAGSAC++ with GIM's
settings (confidence 0.999999, 10000 iterations; its labeller raises the iterations to 1e5).
"""

from __future__ import annotations

import cv2
import numpy as np

from ..config import lookup
from ..errors import EstimatorError
from ..geometry.epipolar import normalize_points
from . import mean_focal

METHODS = {
    "ransac": cv2.RANSAC,
    "lmeds": cv2.LMEDS,
    "rho": cv2.RHO,
    "usac": cv2.USAC_DEFAULT,
    "usac_fast": cv2.USAC_FAST,
    "usac_accurate": cv2.USAC_ACCURATE,
    "usac_prosac": cv2.USAC_PROSAC,
    "usac_magsac": cv2.USAC_MAGSAC,
}


def _method(name: str) -> int:
    return lookup(METHODS, name, "opencv method", EstimatorError)


def homography(p0, p1, threshold, method="ransac", max_iters=3000, confidence=0.995):
    try:
        H, mask = cv2.findHomography(
            p0,
            p1,
            _method(method),
            threshold,
            maxIters=int(max_iters),
            confidence=float(confidence),
        )
    except cv2.error:
        return None, None
    if H is None or mask is None:
        return None, None
    return H, mask.ravel() > 0


def fundamental(p0, p1, threshold, method="usac_magsac", confidence=0.999999, max_iters=10000):
    try:
        F, mask = cv2.findFundamentalMat(
            p0, p1, _method(method), threshold, float(confidence), int(max_iters)
        )
    except cv2.error:
        return None, None
    if F is None or mask is None or F.shape != (3, 3):
        return None, None  # 7-point returns up to 3 stacked solutions: not a robust estimate
    return F, mask.ravel() > 0


def relative_pose(p0, p1, K0, K1, threshold, method="ransac", confidence=0.99999, max_iters=1000):
    n0, n1 = normalize_points(p0, K0), normalize_points(p1, K1)
    th = threshold / mean_focal(K0, K1)
    try:
        E, mask = cv2.findEssentialMat(
            n0,
            n1,
            np.eye(3),
            method=_method(method),
            prob=float(confidence),
            threshold=th,
            maxIters=int(max_iters),
        )
    except cv2.error:
        return None, None, None
    if E is None or mask is None or E.shape[0] < 3:
        return None, None, None
    best = (0, None, None, None)
    # findEssentialMat may return several stacked 3x3 solutions; keep the one most points agree with
    for Ei in np.split(E, E.shape[0] // 3):
        n, R, t, m = cv2.recoverPose(Ei, n0, n1, np.eye(3), mask=mask.copy())
        if n > best[0]:
            best = (n, R, t.ravel(), m.ravel() > 0)
    return best[1], best[2], best[3]
