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
):
    """Point matches as connectors; line segments (`lines*` (L,2,2), matched pairs
    `line_matches` (K,2)) drawn on the images, each matched pair in its own colour."""
    canvas, dx = side_by_side(img0, img1)
    h, w = canvas.shape[:2]
    fig = plt.figure(figsize=(w / dpi, h / dpi + (0.4 if title else 0)), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(canvas)
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

        draw_lines(ax, lines0, lines1, dx, line_matches)
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
