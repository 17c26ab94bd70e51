"""Random homographies for synthetic training pairs, sampled as a quadrilateral inside the image.

A view is made by choosing a convex quadrilateral inside the source image and warping it onto the
output patch. Sampling the quad (rather than the matrix) keeps every output pixel inside the source
image, so views have no black borders and the difficulty knobs have a geometric meaning:
- `difficulty` ∈ [0, 1]: how far each corner may move inward (perspective and zoom) — at 1 a corner
  may reach the centre of the base rectangle along each axis;
- `max_angle` (degrees): in-plane rotation drawn uniformly in ±max_angle (the quad is shrunk as
  little as needed to stay inside the image);
- `translation` ∈ [0, 1]: fraction of the free room around the quad used for a random shift.
Points use the pixel-centre convention: the source spans [−0.5, W−0.5], the patch [−0.5, w−0.5].
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class HomographyConf:
    difficulty: float = 0.7
    translation: float = 1.0
    max_angle: float = 45.0
    min_convexity: float = 0.05
    patch_shape: tuple[int, int] = (640, 480)  # (w, h) of the output views
    max_tries: int = 100


def quad_convexity(quad: np.ndarray) -> float:
    """Smallest |sin| of the turn between consecutive edges, signed by orientation consistency.

    Positive for a convex quadrilateral (all turns the same way), ≤ 0 otherwise; small values mean
    a nearly flat (degenerate) corner.
    """
    e = np.roll(quad, -1, 0) - quad
    nxt = np.roll(e, -1, 0)
    cross = e[:, 0] * nxt[:, 1] - e[:, 1] * nxt[:, 0]
    norms = np.linalg.norm(e, axis=1) * np.linalg.norm(nxt, axis=1)
    s = cross / np.maximum(norms, 1e-12)
    if np.all(s > 0) or np.all(s < 0):
        return float(np.abs(s).min())
    return -1.0


def patch_corners(patch_shape) -> np.ndarray:
    w, h = patch_shape
    return np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64) - 0.5


def _fit_scale(quad: np.ndarray, center: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> float:
    """Largest s ≤ 1 such that center + s·(quad − center) lies within [lo, hi]."""
    rel = quad - center
    s = 1.0
    for k in range(2):
        pos, neg = rel[:, k] > 1e-12, rel[:, k] < -1e-12
        if pos.any():
            s = min(s, (hi[k] - center[k]) / rel[pos, k].max())
        if neg.any():
            s = min(s, (lo[k] - center[k]) / rel[neg, k].min())
    return max(s, 0.0)


def sample_homography(
    size, conf: HomographyConf, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Sample a view of an image of size (W, H).

    Returns H (3×3, source pixels → patch pixels) and the quad (4×2, source pixels) that H maps onto
    the patch corners, in the order top-left, top-right, bottom-right, bottom-left.
    """
    W, Hh = float(size[0]), float(size[1])
    pw, ph = conf.patch_shape
    lo, hi = np.array([-0.5, -0.5]), np.array([W - 0.5, Hh - 0.5])
    center = (lo + hi) / 2
    # Largest centred rectangle with the patch's aspect ratio, so an identity-difficulty view is
    # a pure resize (no anisotropic stretch).
    aspect = pw / ph
    rw, rh = (Hh * aspect, Hh) if W / Hh > aspect else (W, W / aspect)
    half = np.array([rw, rh]) / 2
    base = center + np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    inward = -np.sign(base - center)
    d = float(np.clip(conf.difficulty, 0, 1))

    quad = base
    for _ in range(conf.max_tries):
        cand = base + inward * rng.uniform(0, 1, (4, 2)) * d * half
        if quad_convexity(cand) > conf.min_convexity:
            quad = cand
            break
    # Re-centre: the perspective step shifts the centroid; translation is sampled explicitly below.
    quad = quad - quad.mean(0) + center

    if conf.max_angle > 0:
        a = np.deg2rad(rng.uniform(-conf.max_angle, conf.max_angle))
        R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        quad = (quad - center) @ R.T + center
    quad = center + _fit_scale(quad, center, lo, hi) * (quad - center)

    t = np.zeros(2)
    for k in range(2):
        room_neg, room_pos = quad[:, k].min() - lo[k], hi[k] - quad[:, k].max()
        t[k] = rng.uniform(-max(room_neg, 0.0), max(room_pos, 0.0)) * float(
            np.clip(conf.translation, 0, 1)
        )
    quad = quad + t

    H = cv2.getPerspectiveTransform(
        quad.astype(np.float32), patch_corners(conf.patch_shape).astype(np.float32)
    )
    return H.astype(np.float64), quad


def warp_image(image: np.ndarray, H: np.ndarray, patch_shape) -> np.ndarray:
    """Warp an H×W×C float image with H (source → patch) onto a patch of (w, h)."""
    out = cv2.warpPerspective(
        image,
        H,
        tuple(int(v) for v in patch_shape),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REFLECT_101,
    )
    return out[..., None] if out.ndim == 2 else out
