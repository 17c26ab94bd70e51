"""Pictures and files of one match: matches, keypoints, warp/blend, inliers, the h5, a scatter.

Pictures are drawn by `tiepoint.viz` at display size (long side ≤ `DISPLAY_SIDE`), the points
scaled with the library's coordinate convention, and written as PNG files the page shows and
offers for download.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import numpy as np

from ..images import read_image, scale_points
from ..types import MatchResult

DISPLAY_SIDE = 1024
PICTURES = ("matches", "inliers", "keypoints", "warp")


def display_image(path: Path | None, size: tuple[int, int] | None = None):
    """(H×W×3 float image at ≤ DISPLAY_SIDE, scale original → display). Without a readable file
    (a benchmark pair whose images moved), a grey canvas of the original `size`."""
    if path is not None and Path(path).is_file():
        arr, size = read_image(path, max_size=DISPLAY_SIDE)
        arr = arr.repeat(3, -1) if arr.shape[-1] == 1 else arr[..., :3]
    else:
        s = min(1.0, DISPLAY_SIDE / max(size))
        arr = np.full((max(1, round(size[1] * s)), max(1, round(size[0] * s)), 3), 0.5, np.float32)
    s = min(1.0, DISPLAY_SIDE / max(size))
    if arr.shape[1] != round(size[0] * s) or arr.shape[0] != round(size[1] * s):
        import cv2

        arr = cv2.resize(
            arr, (round(size[0] * s), round(size[1] * s)), interpolation=cv2.INTER_AREA
        )
    return np.ascontiguousarray(arr, np.float32), np.array([s, s])


def _pts(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    return scale_points(np.asarray(p, np.float64).reshape(-1, 2), s)


def draw_all(
    result: MatchResult,
    image0: Path | None,
    image1: Path | None,
    est,
    out: Path,
    title: str,
    stem: str = "pair",
    which: tuple[str, ...] = PICTURES,
) -> dict[str, Path]:
    """Write the pictures of a match named in `which` into `out`; returns name → PNG path."""
    from ..viz.matches import plot_matches
    from ..viz.warp import plot_warp

    out.mkdir(parents=True, exist_ok=True)
    img0, s0 = display_image(image0, result.image_size0)
    img1, s1 = display_image(image1, result.image_size1)
    p0, p1 = _pts(result.points0, s0), _pts(result.points1, s1)
    inl = est.inliers if est is not None else None
    n_in = est.num_inliers if est is not None else 0
    what = f"{est.estimator} {est.model}: {n_in} inliers" if est is not None else "no estimate"
    files = {}
    if "matches" in which:
        files["matches"] = out / f"{stem}_matches.png"
        title_m = f"{title}: {len(result)} matches, {what}"
        seg = lambda ln, sc: None if ln is None else _pts(ln, sc).reshape(-1, 2, 2)
        plot_matches(
            img0,
            img1,
            p0,
            p1,
            result.scores,
            inl,
            files["matches"],
            title=title_m,
            lines0=seg(result.lines0, s0),
            lines1=seg(result.lines1, s1),
            line_matches=result.line_matches,
        )
    if "inliers" in which:
        files["inliers"] = out / f"{stem}_inliers.png"
        keep = inl if inl is not None else np.zeros(len(result), bool)
        title_i = f"{title}: {n_in} inliers ({what})"
        plot_matches(
            img0,
            img1,
            p0[keep],
            p1[keep],
            result.scores[keep],
            None,
            files["inliers"],
            title=title_i,
        )
    if "keypoints" in which:
        files["keypoints"] = _draw_keypoints(
            result, img0, img1, s0, s1, out / f"{stem}_keypoints.png"
        )
    if "warp" in which:
        files["warp"] = out / f"{stem}_warp.png"
        homography = est is not None and est.model == "homography"
        H = None
        if homography and est.matrix is not None:
            from ..geometry.homography import scale_homography

            H = scale_homography(est.matrix, s0, s1)  # at display scale: S1 H S0^-1
        note = None if homography else "warp needs a homography (choose the homography model)"
        plot_warp(img0, img1, H, files["warp"], title=note)
    return files


def _draw_keypoints(result, img0, img1, s0, s1, path: Path) -> Path:
    """All keypoints of both images on one canvas."""
    import matplotlib.pyplot as plt

    from ..viz.matches import save_figure, side_by_side

    canvas, dx = side_by_side(img0, img1)
    h, w = canvas.shape[:2]
    fig = plt.figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas)
    ax.set_axis_off()
    k0, k1 = _pts(result.keypoints0, s0), _pts(result.keypoints1, s1)
    ax.scatter(k0[:, 0], k0[:, 1], s=3, c="lime", lw=0)
    ax.scatter(k1[:, 0] + dx, k1[:, 1], s=3, c="lime", lw=0)
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    label = f"{len(result.keypoints0)} / {len(result.keypoints1)} keypoints"
    box = dict(facecolor="black", alpha=0.6, lw=0)
    ax.text(5, 5, label, color="white", fontsize=9, va="top", bbox=box)
    save_figure(fig, path)
    return path


def write_h5(result: MatchResult, path: Path, meta: dict) -> Path:
    """The result in the documented layout (docs/formats.md), as `tiepoint match` writes it."""
    from ..cli import write_matches_h5

    write_matches_h5(path, result, meta)
    return path


def svg_scatter(
    names: list[str],
    x: np.ndarray,
    y: np.ndarray,
    xlabel: str,
    ylabel: str,
    cap: float,
    size: int = 420,
) -> str:
    """A per-pair scatter as inline SVG: hover shows the pair and both values; clicking a point
    (a `circle` with `data-pair`) is turned into a pair choice by the page's script. Values are
    clipped to `cap` (failures, inf, sit on the border)."""
    pad = 48
    span = size - 2 * pad

    def pos(v):
        v = cap if not math.isfinite(v) else min(max(v, 0.0), cap)
        return pad + span * v / cap

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{size}" '
        f'class="tp-scatter" style="background:white">',
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#888"/>',
        f'<line x1="{pad}" y1="{size - pad}" x2="{size - pad}" y2="{pad}" stroke="#bbb" '
        'stroke-dasharray="4"/>',
        f'<text x="{size / 2}" y="{size - 12}" text-anchor="middle" font-size="12">'
        f"{html.escape(xlabel)}</text>",
        f'<text x="14" y="{size / 2}" text-anchor="middle" font-size="12" '
        f'transform="rotate(-90 14 {size / 2})">{html.escape(ylabel)}</text>',
        f'<text x="{pad}" y="{size - pad + 14}" font-size="10">0</text>',
        f'<text x="{size - pad}" y="{size - pad + 14}" font-size="10" text-anchor="end">'
        f"≥{cap:g}</text>",
        f'<text x="{pad - 4}" y="{pad + 4}" font-size="10" text-anchor="end">≥{cap:g}</text>',
    ]
    for n, a, b in zip(names, x, y):
        cx, cy = pos(float(a)), size - pos(float(b))
        tip = f"{n}\n{xlabel}: {float(a):.3g}\n{ylabel}: {float(b):.3g}"
        parts.append(
            f'<circle class="tp-pair" data-pair="{html.escape(n, quote=True)}" cx="{cx:.1f}" '
            f'cy="{cy:.1f}" r="6" fill="#1f77b4" fill-opacity="0.7" style="cursor:pointer">'
            f"<title>{html.escape(tip)}</title></circle>"
        )
    parts.append("</svg>")
    return "".join(parts)
