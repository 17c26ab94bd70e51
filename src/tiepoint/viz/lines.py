"""Line segments in the match picture: every detected line thin and pale, matched lines thick,
each match in its own colour on both images so the eye pairs them without connectors."""

from __future__ import annotations

import numpy as np

UNMATCHED_COLOR = (0.2, 0.6, 1.0, 0.55)


def match_colors(k: int) -> np.ndarray:
    """k distinct RGBA colours (golden-ratio hue steps: neighbours in the list differ most)."""
    import matplotlib.colors as mcolors

    hues = (np.arange(k) * 0.618033988749895) % 1.0
    hsv = np.stack([hues, np.full(k, 0.9), np.full(k, 1.0)], -1)
    rgb = mcolors.hsv_to_rgb(hsv).reshape(-1, 3)
    return np.concatenate([rgb, np.ones((k, 1))], -1)


def draw_lines(
    ax,
    lines0: np.ndarray | None,
    lines1: np.ndarray | None,
    dx: float,
    line_matches: np.ndarray | None = None,
    lw: float = 1.0,
) -> np.ndarray:
    """Draw (L,2,2) segments of image 0 at x-offset 0 and of image 1 at `dx` on `ax`; matched
    pairs (K,2) get one colour each. Returns the (K,4) colours used, in match order."""
    from matplotlib.collections import LineCollection

    l0 = np.zeros((0, 2, 2)) if lines0 is None else np.asarray(lines0, float).reshape(-1, 2, 2)
    l1 = np.zeros((0, 2, 2)) if lines1 is None else np.asarray(lines1, float).reshape(-1, 2, 2)
    l1 = l1 + np.array([dx, 0.0])
    m = np.zeros((0, 2), int) if line_matches is None else np.asarray(line_matches, int)
    m = m.reshape(-1, 2)
    colors = match_colors(len(m))
    matched0 = np.zeros(len(l0), bool)
    matched1 = np.zeros(len(l1), bool)
    matched0[m[:, 0]] = True
    matched1[m[:, 1]] = True
    rest = np.concatenate([l0[~matched0], l1[~matched1]])
    if len(rest):
        ax.add_collection(LineCollection(rest, colors=[UNMATCHED_COLOR], linewidths=0.6 * lw))
    if len(m):
        segs = np.concatenate([l0[m[:, 0]], l1[m[:, 1]]])
        ax.add_collection(
            LineCollection(segs, colors=np.concatenate([colors, colors]), linewidths=2 * lw)
        )
    return colors
