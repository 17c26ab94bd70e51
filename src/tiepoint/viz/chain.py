"""Picture of one propagated label chain: the frames it passes, the hops, the labels that survive.

Three rows: thumbnails of the chain's frames; the two end frames side by side with a sample of the
surviving labels (coloured by their left x, so the correspondence reads at a glance); and the
number of labels per hop and linked through the chain after each hop, against the threshold a
link needs (GIM: 512). Pure drawing: the caller passes arrays and the hop trace.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.collections import LineCollection

from .matches import save_figure, side_by_side


def _placeholder(size: tuple[int, int]) -> np.ndarray:
    w, h = size
    return np.full((h, w, 3), 0.85, np.float32)


def _as_float(img: np.ndarray | None, size) -> np.ndarray:
    if img is None:
        return _placeholder(size)
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, 2)
    return img.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)


def plot_chain(
    path: str | os.PathLike,
    labels: np.ndarray,
    i0: int,
    i1: int,
    hops: Sequence[tuple],
    frame: Callable[[int], np.ndarray | None] | None = None,
    size: tuple[int, int] | None = None,
    min_links: int = 512,
    max_lines: int = 150,
    max_thumbs: int = 8,
    title: str | None = None,
    dpi: int = 90,
) -> Path:
    """Write the chain picture to `path` (PNG).

    labels: (K, 4) [x0, y0, x1, y1] surviving labels between frames i0 and i1.
    hops: one ((a, b), hop labels, linked labels or None for a failed link) per hop, in order.
    frame: idx → H×W×3 image (uint8 or float), or None; without it, grey placeholders.
    size: (W, H) of a frame when no image is given (default: from the label extents).
    """
    labels = np.asarray(labels, np.float64).reshape(-1, 4)
    if size is None:
        ext = labels.max(0) if len(labels) else np.array([640, 480, 640, 480])
        size = (int(max(ext[0], ext[2])) + 1, int(max(ext[1], ext[3])) + 1)
    get = frame or (lambda i: None)
    chain = [i0] + [b for (a, b), _, n in hops if n is not None and b <= i1]
    chain = sorted(set(chain) | {i1})
    pick = np.unique(np.linspace(0, len(chain) - 1, min(max_thumbs, len(chain))).round()).astype(
        int
    )
    thumbs = [chain[k] for k in pick]

    fig = plt.figure(figsize=(max(2.0 * len(thumbs), 10), 11), dpi=dpi)
    gs = fig.add_gridspec(3, len(thumbs), height_ratios=[1, 2.2, 1.4], hspace=0.3)
    for k, idx in enumerate(thumbs):
        ax = fig.add_subplot(gs[0, k])
        ax.imshow(_as_float(get(idx), size))
        ax.set_title(f"frame {idx}", fontsize=9)
        ax.set_axis_off()

    ax = fig.add_subplot(gs[1, :])
    canvas, dx = side_by_side(_as_float(get(i0), size), _as_float(get(i1), size), gap=20)
    ax.imshow(canvas)
    ax.set_axis_off()
    if len(labels):
        rng = np.random.default_rng(0)
        sel = rng.choice(len(labels), min(max_lines, len(labels)), replace=False)
        colors = plt.get_cmap("hsv")(labels[sel, 0] / max(size[0], 1) * 0.85)
        segs = np.stack([labels[sel, :2], labels[sel, 2:] + [dx, 0]], 1)
        ax.add_collection(LineCollection(segs, colors=colors, linewidths=0.7, alpha=0.8))
        ax.scatter(labels[:, 0], labels[:, 1], s=1, c="k", alpha=0.3)
        ax.scatter(labels[:, 2] + dx, labels[:, 3], s=1, c="k", alpha=0.3)
    ax.set_title(
        f"{i0} → {i1} (span {i1 - i0}): {len(labels)} surviving labels, {len(hops)} hops",
        fontsize=11,
    )

    ax = fig.add_subplot(gs[2, :])
    ends = [b for (_, b), _, _ in hops]
    ax.bar(
        ends,
        [n for _, n, _ in hops],
        width=max(1.0, 0.4 * _min_gap(ends)),
        color="0.75",
        label="labels of the hop",
    )
    ok = [(b, n) for (_, b), _, n in hops if n is not None]
    bad = [b for (_, b), _, n in hops if n is None]
    if ok:
        ax.plot(*zip(*ok), "o-", color="tab:green", label="linked through the chain")
    if bad:
        ax.plot(bad, [min_links] * len(bad), "x", color="tab:red", ms=9, label="link failed")
    ax.axhline(min_links, color="tab:red", ls="--", lw=1, label=f"link threshold {min_links}")
    ax.set_xlabel("hop end frame")
    ax.set_ylabel("labels")
    ax.set_yscale("log")
    ax.legend(fontsize=8, loc="lower left")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=dpi, tight=False)  # a tight bbox draws the figure twice
    return Path(path)


def _min_gap(xs: Sequence[int]) -> float:
    d = np.diff(sorted(set(xs)))
    return float(d.min()) if len(d) else 1.0
