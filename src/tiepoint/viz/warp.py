"""Image 1 warped onto image 0 by a homography, shown next to image 0 and as a blend."""

from __future__ import annotations

from pathlib import Path

import cv2
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from .matches import DISPLAY_SIZE, as_uint8, save_figure, to_display


def _scaled(s) -> np.ndarray:
    """The pixel-centre scale x' = (x + 0.5)·s − 0.5 as a 3×3 matrix."""
    return np.array([[s[0], 0, 0.5 * s[0] - 0.5], [0, s[1], 0.5 * s[1] - 0.5], [0, 0, 1.0]])


def warp_to_reference(img1: np.ndarray, H_0to1: np.ndarray, size0: tuple[int, int]) -> np.ndarray:
    """Resample image 1 in the frame of image 0 (W0, H0): pixel p of the output is img1(H·p)."""
    return cv2.warpPerspective(
        img1.astype(np.float32),
        np.asarray(H_0to1, np.float64),
        size0,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
    )


def plot_warp(
    img0: np.ndarray,
    img1: np.ndarray,
    H_0to1: np.ndarray | None,
    path: str | Path,
    title: str | None = None,
    dpi: int = 100,
    size0: tuple[int, int] | None = None,
    size1: tuple[int, int] | None = None,
    max_size: int | None = DISPLAY_SIZE,
):
    """H_0to1 maps frames of size `size0` → `size1` (W, H; default the arrays'); the panels are
    drawn at display size (long side ≤ `max_size`), H conjugated by the two scales."""
    img0, s0 = to_display(img0, size0, max_size)
    img1, s1 = to_display(img1, size1, max_size)
    if H_0to1 is not None:
        H_0to1 = _scaled(s1) @ np.asarray(H_0to1, np.float64) @ np.linalg.inv(_scaled(s0))
    h0, w0 = img0.shape[:2]
    if H_0to1 is None:
        warped = np.zeros_like(img0)
        title = (title + " — " if title else "") + "no homography found"
    else:
        warped = warp_to_reference(img1, H_0to1, (w0, h0))
    blend = 0.5 * img0 + 0.5 * warped
    save_panels([img0, warped, blend], ["A", "B warped onto A", "blend"], path, title, dpi)


def save_panels(
    panels: list[np.ndarray], labels: list[str], path: str | Path, title: str | None, dpi: int
) -> None:
    """Equal-sized (H, W, 3) panels in [0, 1] side by side at their own pixel size, each labelled
    at its top left, an optional title at the bottom left; saved atomically."""
    h, w = panels[0].shape[:2]
    gap = np.ones((h, 10, 3), np.float32)
    canvas = np.concatenate([x for p in panels for x in (gap, p)][1:], 1)
    fig = plt.figure(figsize=(canvas.shape[1] / dpi, canvas.shape[0] / dpi), dpi=dpi)
    ax = fig.add_axes([0, 0, 1, 1])
    ax.imshow(as_uint8(canvas), interpolation="none")
    ax.set_axis_off()
    box = dict(facecolor="black", alpha=0.6, lw=0)
    for k, label in enumerate(labels):
        ax.text(5 + k * (w + 10), 5, label, color="white", fontsize=8, va="top", bbox=box)
    if title:
        ax.text(5, h - 5, title, color="white", fontsize=9, va="bottom", bbox=box)
    save_figure(fig, path, dpi)
