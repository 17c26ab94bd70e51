"""Hard pairs: in-plane rotation search and ASIFT/MODS-style view synthesis (docs/hard_pairs.md).

Both wrap a sparse `Matcher` (duck-typed: `extract`, `match_features`, `conf`), sit beside api.py
and are switched on by the pipeline's optional `hard_pairs` section:

- `rotations: [0, 90, 180, 270]`: image 1 is extracted once per rotation (np.rot90, exact), each
  copy is matched to image 0, the rotation with the most inliers wins and its keypoints are mapped
  back to image 1's frame analytically (`unrotate_points`).
- `view_synthesis: true`: only when the plain attempt has fewer than `min_inliers` inliers, affine
  views (ASIFT's tilts t and longitudes φ with step 72°/t) of each image are matched against the
  other original image; matches mapped back to the original frames are merged (deduplicated) with
  the plain ones. Matching views × original (not views × views) keeps the cost linear in views: a
  tilt seen in image 1 is undone by compressing image 0 the same way, and vice versa.

Inliers are counted with the `geometry` model (homography or fundamental matrix).
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from omegaconf import DictConfig

from . import images
from .errors import ConfigError
from .types import MatchResult

DEFAULTS = {
    "rotations": None,  # e.g. [0, 90, 180, 270]: multiples of 90 (degrees, counter-clockwise)
    "view_synthesis": False,
    "min_inliers": 30,  # view synthesis runs only below this many plain inliers
    "tilts": [2.0, 4.0],  # ASIFT tilts t = 1/cos(θ): 2 ≈ 60°, 4 ≈ 75.5°
    "geometry": "homography",  # or "fundamental": how inliers are counted
    "dedupe_px": 1.0,  # merged matches closer than this in both images are one
}


def check_conf(conf: DictConfig | dict) -> None:
    rot = conf.get("rotations")
    if rot is not None and not all(isinstance(r, int) and r % 90 == 0 for r in rot):
        raise ConfigError(f"hard_pairs.rotations must be multiples of 90 degrees, got {list(rot)}")
    if conf.get("geometry") not in ("homography", "fundamental"):
        raise ConfigError(
            f"hard_pairs.geometry must be 'homography' or 'fundamental', got {conf.get('geometry')!r}"
        )
    if any(float(t) < 1 for t in conf.get("tilts") or []):
        raise ConfigError(f"hard_pairs.tilts must be >= 1, got {list(conf.get('tilts'))}")


def enabled(conf: DictConfig | dict | None) -> bool:
    return bool(conf) and bool(conf.get("rotations") or conf.get("view_synthesis"))


# --- point maps -----------------------------------------------------------------------------


def unrotate_points(points: np.ndarray, degrees: int, size: tuple[int, int]) -> np.ndarray:
    """Points of `np.rot90(img, degrees // 90)` → points of `img` (size (W, H) of `img`).

    np.rot90 turns counter-clockwise: rotated[i, j] = img[j, W-1-i] for one turn, so a pixel
    centre (x', y') of the rotated image is (W-1-y', x') of the original.
    """
    w, h = size
    p = np.asarray(points, np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    k = (int(degrees) // 90) % 4
    if k == 0:
        out = np.stack([x, y], -1)
    elif k == 1:
        out = np.stack([w - 1 - y, x], -1)
    elif k == 2:
        out = np.stack([w - 1 - x, h - 1 - y], -1)
    else:
        out = np.stack([y, h - 1 - x], -1)
    return out.astype(np.float32)


def affine_view(img: np.ndarray, tilt: float, phi: float) -> tuple[np.ndarray, np.ndarray]:
    """ASIFT's simulated view: rotate by φ degrees, blur along x (σ = 0.8·√(t²−1)), squeeze x by
    1/t. Returns the view and the 2×3 affine A mapping original pixels to view pixels."""
    h, w = img.shape[:2]
    out = img
    A = np.eye(3)
    if phi:
        c, s = np.cos(np.radians(phi)), np.sin(np.radians(phi))
        R = np.array([[c, -s], [s, c]])
        corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64) @ R.T
        lo = corners.min(0)
        size = np.ceil(corners.max(0) - lo).astype(int) + 1
        A = np.array([[c, -s, -lo[0]], [s, c, -lo[1]], [0, 0, 1]])
        out = cv2.warpAffine(
            img, A[:2], (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR, borderValue=0
        )
    if tilt != 1:
        sigma = 0.8 * np.sqrt(tilt * tilt - 1)
        out = cv2.GaussianBlur(out, (0, 0), sigmaX=sigma, sigmaY=0.01)
        nw = max(2, int(round(out.shape[1] / tilt)))
        sx = nw / out.shape[1]
        out = cv2.resize(out, (nw, out.shape[0]), interpolation=cv2.INTER_LINEAR)
        # pixel-centre convention of the resize: x' = (x + 0.5)·sx − 0.5
        A = np.array([[sx, 0, 0.5 * sx - 0.5], [0, 1, 0], [0, 0, 1]]) @ A
    return np.ascontiguousarray(out), A[:2]


def view_params(tilts) -> list[tuple[float, float]]:
    """ASIFT's sampling: for each tilt t, longitudes φ = 0, b/t, 2b/t, … < 180° with b = 72°."""
    return [(float(t), float(phi)) for t in tilts for phi in np.arange(0, 180, 72.0 / float(t))]


def apply_affine_inverse(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    M = np.vstack([A, [0, 0, 1]])
    p = np.c_[np.asarray(points, np.float64), np.ones(len(points))] @ np.linalg.inv(M).T
    return p[:, :2].astype(np.float32)


# --- matching -------------------------------------------------------------------------------


def _inliers(result: MatchResult, geometry: str) -> int:
    need = 4 if geometry == "homography" else 8
    if len(result) < need:
        return 0
    fit = result.homography if geometry == "homography" else result.fundamental
    inl = fit()[1]
    return int(inl.sum()) if inl is not None else 0


def _array(image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        return image if image.ndim == 3 else image[..., None]
    t, _ = images.to_tensor(image)
    return t[0].permute(1, 2, 0).numpy()


def _view_resize(matcher, resize, src_shape, view_shape):
    """The resize that extracts a view at the scale its source image is extracted at (the
    pipeline resizes every input to the same long/short side, which would blow a squeezed view
    up by up to t)."""
    pre = matcher.conf.preprocessing
    r = pre.resize if resize is None else (resize or None)
    if not r:
        return 0
    pick = max if pre.side == "long" else min
    s = r / pick(src_shape[:2])
    return max(2, int(round(pick(view_shape[:2]) * s)))


def _merge(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], size0, size1, px: float):
    """Match lists (p0, p1, scores) in the original frames → one `MatchResult`, duplicates (both
    ends within `px`) dropped keeping the highest score."""
    p0 = np.concatenate([p[0] for p in parts]).reshape(-1, 2)
    p1 = np.concatenate([p[1] for p in parts]).reshape(-1, 2)
    s = np.concatenate([p[2] for p in parts]).astype(np.float32)
    order = np.argsort(-s, kind="stable")
    p0, p1, s = p0[order], p1[order], s[order]
    key = np.round(np.c_[p0, p1] / max(px, 1e-6)).astype(np.int64)
    _, first = np.unique(key, axis=0, return_index=True)
    keep = np.sort(first)
    k = len(keep)
    return MatchResult(
        p0[keep].astype(np.float32),
        p1[keep].astype(np.float32),
        np.stack([np.arange(k), np.arange(k)], -1).astype(np.int64).reshape(-1, 2),
        s[keep],
        size0,
        size1,
    )


def match_hard(matcher, image0, image1, resize=None) -> MatchResult:
    """`Matcher.match` with the pipeline's `hard_pairs` options (see the module docstring).

    `result.extra` gains `rotation1` (the angle of image 1 kept, degrees), `views` (simulated
    views extracted; 0 when the plain attempt sufficed) and `inliers` (of the returned matches)."""
    conf = {**DEFAULTS, **dict(matcher.conf.hard_pairs)}
    t0 = time.perf_counter()
    geometry = conf["geometry"]
    f0 = matcher.extract(image0, resize)
    rotations = [int(r) for r in (conf["rotations"] or [0])]
    arr1 = _array(image1) if (rotations != [0] or conf["view_synthesis"]) else None
    best = None
    for deg in rotations:
        im = np.rot90(arr1, deg // 90) if deg % 360 else image1
        f1 = matcher.extract(im, resize)
        r = matcher.match_features(f0, f1)
        n = _inliers(r, geometry)
        if best is None or n > best[0]:
            best = (n, deg, r, f1)
    n_in, deg, result, f1 = best
    t1 = time.perf_counter()
    if deg % 360:
        size1 = (arr1.shape[1], arr1.shape[0])
        result.keypoints1 = unrotate_points(result.keypoints1, deg, size1)
        result.image_size1 = size1
    n_views = 0
    if conf["view_synthesis"] and n_in < int(conf["min_inliers"]):
        result, n_views = _view_synthesis(matcher, image0, arr1, f0, f1, result, conf, resize, deg)
        n_in = _inliers(result, geometry)
    result.timings = {"rotations": t1 - t0, "views": time.perf_counter() - t1}
    result.extra.update(
        rotation1=np.asarray(deg % 360, np.int64),
        views=np.asarray(n_views, np.int64),
        inliers=np.asarray(n_in, np.int64),
    )
    return result


def _view_synthesis(matcher, image0, arr1, f0, f1, plain: MatchResult, conf, resize, deg):
    """Views of each image matched against the other original (image 1 in its kept rotation);
    everything mapped back to the original frames and merged with the plain matches."""
    arr0 = _array(image0)
    size1 = (arr1.shape[1], arr1.shape[0])
    arr1 = np.rot90(arr1, deg // 90) if deg % 360 else arr1
    parts = [(plain.points0, plain.points1, plain.scores)]
    params = view_params(conf["tilts"])
    for tilt, phi in params:
        for side in (0, 1):
            view, A = affine_view(arr0 if side == 0 else arr1, tilt, phi)
            src = arr0 if side == 0 else arr1
            fv = matcher.extract(view, _view_resize(matcher, resize, src.shape, view.shape))
            r = matcher.match_features(fv, f1) if side == 0 else matcher.match_features(f0, fv)
            if not len(r):
                continue
            p0, p1 = r.points0, r.points1
            if side == 0:
                p0 = apply_affine_inverse(A, p0)
            else:
                p1 = apply_affine_inverse(A, p1)
            if deg % 360:
                p1 = unrotate_points(p1, deg, size1)
            parts.append((p0, p1, r.scores))
    size0 = (arr0.shape[1], arr0.shape[0])
    return _merge(parts, size0, size1, float(conf["dedupe_px"])), 2 * len(params)


# --- synthetic hard pairs (tests, benchmarks/hard_pairs.py) -----------------------------------


def tilt_homography(size, tilt_deg: float, azimuth_deg: float = 0.0, focal: float = 1.5):
    """H (3×3) from a fronto-parallel view of a planar image of `size` (W, H) to a camera that
    orbited the plane's centre by `tilt_deg` about an in-plane axis at `azimuth_deg`, at the same
    distance (`focal` × the long side; the first camera sees exactly the image). ASIFT's
    tilt is t = 1/cos(θ)."""
    w, h = size
    cx, cy = (w - 1) / 2, (h - 1) / 2
    f = focal * max(w, h)
    a, t = np.radians(azimuth_deg), np.radians(tilt_deg)
    axis = np.array([np.cos(a), np.sin(a), 0.0])
    R, _ = cv2.Rodrigues(axis * t)
    Rt = R.T
    M = np.c_[Rt[:, 0], Rt[:, 1], [0, 0, f]] @ np.array([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    return np.diag([f, f, 1.0]) @ M


def rotation_homography(size, degrees: int) -> np.ndarray:
    """H of `np.rot90(img, degrees // 90)`: the inverse of `unrotate_points` (size (W, H))."""
    w, h = size
    k = (int(degrees) // 90) % 4
    return [
        np.eye(3),
        np.array([[0, 1, 0], [-1, 0, w - 1], [0, 0, 1.0]]),
        np.array([[-1, 0, w - 1], [0, -1, h - 1], [0, 0, 1.0]]),
        np.array([[0, -1, h - 1], [1, 0, 0], [0, 0, 1.0]]),
    ][k]


def fit_canvas(H: np.ndarray, size, long_side: int | None = None) -> tuple[np.ndarray, tuple]:
    """H followed by the translation (and scale to `long_side`, default the source's) that puts
    the warped image `size` (W, H) exactly on a canvas; returns (H', canvas size (W, H))."""
    w, h = size
    c = np.array([[0, 0, 1], [w - 1, 0, 1], [w - 1, h - 1, 1], [0, h - 1, 1]], np.float64) @ H.T
    c = c[:, :2] / c[:, 2:]
    lo, span = c.min(0), c.max(0) - c.min(0)
    s = (long_side or max(w, h)) / max(span.max(), 1)
    T = np.array([[s, 0, -s * lo[0]], [0, s, -s * lo[1]], [0, 0, 1]])
    out = (int(np.ceil(span[0] * s)) + 1, int(np.ceil(span[1] * s)) + 1)
    return T @ H, out


def warp_image(img: np.ndarray, H: np.ndarray, out_size) -> np.ndarray:
    """`img` resampled by H into a canvas of `out_size` (W, H); area-averaged where it shrinks
    (warped from a pre-blurred copy), so a strong tilt does not alias."""
    s = np.sqrt(abs(np.linalg.det(H[:2, :2] / H[2, 2])))
    src = cv2.GaussianBlur(img, (0, 0), 0.5 / s) if s < 0.7 else img
    out = cv2.warpPerspective(src, H, tuple(out_size), flags=cv2.INTER_LINEAR, borderValue=0)
    return out if out.ndim == img.ndim else out[..., None]
