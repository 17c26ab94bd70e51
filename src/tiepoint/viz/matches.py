"""Side-by-side match plot: connectors coloured by confidence, outliers of the robust fit in grey;
line segments (line pipelines) drawn over the images."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from ..atomic import atomic_path


def save_figure(fig, path: str | os.PathLike, dpi: int = 100, tight: bool = True) -> None:
    """Save and close a figure; written atomically (matplotlib picks the format from the suffix)."""
    with atomic_path(path) as tmp:
        kw = {"bbox_inches": "tight", "pad_inches": 0.05} if tight else {}
        fig.savefig(tmp, dpi=dpi, format=Path(path).suffix.lstrip(".") or "png", **kw)
    plt.close(fig)


DISPLAY_SIZE = 1600  # long side of each image in a picture: pictures are for eyes, not pixels


def to_display(
    img: np.ndarray, size: tuple[int, int] | None = None, max_size: int | None = DISPLAY_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """`img` shrunk (area average) so its long side is at most `max_size`, and the scale (sx, sy)
    from the frame of size `size` (W, H; default the array's — the points' frame, which `img`
    may already be a decode-time reduction of) to the returned image, for `images.scale_points`.
    A 9-MP photo is never drawn at native size: the figure is what costs seconds and gigabytes."""
    import cv2

    h, w = img.shape[:2]
    size = size or (w, h)
    s = min(1.0, max_size / max(size)) if max_size else 1.0
    nw, nh = max(1, round(size[0] * s)), max(1, round(size[1] * s))
    if (nw, nh) != (w, h):
        interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
        img = cv2.resize(np.ascontiguousarray(img, np.float32), (nw, nh), interpolation=interp)
        img = img[..., None] if img.ndim == 2 else img
    return img, np.array([nw / size[0], nh / size[1]])


def as_uint8(img: np.ndarray) -> np.ndarray:
    """[0, 1] floats → uint8 for imshow, which otherwise holds several float64 copies (~0.9 GB
    for a 1600-px pair)."""
    return (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)


def side_by_side(img0: np.ndarray, img1: np.ndarray, gap: int = 10) -> tuple[np.ndarray, float]:
    """Two H×W×3 float images on one canvas (top-aligned); returns canvas and x-offset of image 1."""
    h = max(img0.shape[0], img1.shape[0])
    w = img0.shape[1] + gap + img1.shape[1]
    canvas = np.ones((h, w, 3), np.float32)
    canvas[: img0.shape[0], : img0.shape[1]] = img0
    canvas[: img1.shape[0], img0.shape[1] + gap :] = img1
    return canvas, img0.shape[1] + gap


def plot_matches(
    img0: np.ndarray,
    img1: np.ndarray,
    points0: np.ndarray,
    points1: np.ndarray,
    scores: np.ndarray | None = None,
    inliers: np.ndarray | None = None,
    path: str | Path | None = None,
    title: str | None = None,
    max_lines: int = 2000,
    dpi: int = 100,
    lines0: np.ndarray | None = None,
    lines1: np.ndarray | None = None,
    line_matches: np.ndarray | None = None,
    size0: tuple[int, int] | None = None,
    size1: tuple[int, int] | None = None,
    max_size: int | None = DISPLAY_SIZE,
):
    """Point matches as connectors; line segments (`lines*` (L,2,2), matched pairs
    `line_matches` (K,2)) drawn on the images, each matched pair in its own colour. Points and
    lines are in frames of size `size0`/`size1` (W, H; default the arrays'); each image is drawn
    with its long side at most `max_size` and the points scaled to it."""
    from ..images import scale_points

    img0, s0 = to_display(img0, size0, max_size)
    img1, s1 = to_display(img1, size1, max_size)
    points0 = scale_points(np.asarray(points0, np.float64).reshape(-1, 2), s0)
    points1 = scale_points(np.asarray(points1, np.float64).reshape(-1, 2), s1)
    canvas, dx = side_by_side(img0, img1)
    h, w = canvas.shape[:2]
    fig = plt.figure(figsize=(w / dpi, h / dpi + (0.4 if title else 0)), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(as_uint8(canvas), interpolation="none")  # drawn 1:1: no resampling copies
    ax.set_axis_off()
    k = len(points0)
    scores = np.ones(k) if scores is None else np.asarray(scores)
    inliers = np.ones(k, bool) if inliers is None else np.asarray(inliers, bool)
    order = np.argsort(scores)[-max_lines:]
    cmap = plt.get_cmap("RdYlGn")
    for i in order:
        (x0, y0), (x1, y1) = points0[i], points1[i]
        color = cmap(float(scores[i])) if inliers[i] else (0.6, 0.6, 0.6, 0.6)
        ax.plot([x0, x1 + dx], [y0, y1], color=color, lw=0.7 if inliers[i] else 0.4)
    if lines0 is not None or lines1 is not None:
        from .lines import draw_lines

        def shown(lines, s):  # endpoints into the displayed image's frame
            if lines is None:
                return None
            lines = np.asarray(lines, np.float64)
            return scale_points(lines.reshape(-1, 2), s).reshape(lines.shape)

        draw_lines(ax, shown(lines0, s0), shown(lines1, s1), dx, line_matches)
    ax.scatter(points0[:, 0], points0[:, 1], s=2, c="lime", lw=0) if k else None
    ax.scatter(points1[:, 0] + dx, points1[:, 1], s=2, c="lime", lw=0) if k else None
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    if title:
        ax.text(
            5,
            5,
            title,
            color="white",
            fontsize=9,
            va="top",
            bbox=dict(facecolor="black", alpha=0.6, lw=0),
        )
    if path is not None:
        save_figure(fig, path, dpi)
    return fig
