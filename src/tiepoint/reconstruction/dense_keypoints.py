"""Dense matches → per-image keypoints, so tracks form across pairs (hloc's `match_dense.py` idea).

A dense matcher gives each pair its own sampled points: the same scene point is found at slightly
different places in different pairs and never shares a keypoint index. Here the points of every
pair are snapped to a grid of `cell` pixels (in the stored image's pixels): each occupied cell of
an image becomes one keypoint, at the position of the highest-scoring point that fell into it
(sub-pixel accuracy kept), with that score. Each pair's matches are re-indexed to these keypoints;
matches that became duplicates or one-to-many (two points of one cell matched to two cells) are
reduced to one-to-one, best score first, as COLMAP and hloc's `matches0` need.

Coordinates follow tiepoint's convention (pixel centres at integers), so cell k spans the pixels
[k·cell, (k+1)·cell − 1] exactly: the cell of x is floor((x + 0.5) / cell).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

DEFAULT_CELL = 2.0  # px; hloc uses 1–4 depending on the resolution


@dataclass
class PairPoints:
    """One pair's sampled matches: point i of image `name0` ↔ point i of `name1`."""

    name0: str
    name1: str
    points0: np.ndarray  # (K, 2) pixels of the stored image
    points1: np.ndarray
    scores: np.ndarray  # (K,)


@dataclass
class Quantised:
    """Per-image keypoints and scores; per-pair (M, 2) matches into them with scores."""

    keypoints: dict[str, np.ndarray] = field(default_factory=dict)
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    matches: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def cell_of(points: np.ndarray, cell: float) -> np.ndarray:
    """(K, 2) integer cell indices of pixel positions (pixel centres at integers)."""
    return np.floor((np.asarray(points, np.float64) + 0.5) / cell).astype(np.int64)


def one_to_one(matches: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Greedy one-to-one: matches in decreasing score (ties: the earlier one) are kept while
    neither of their keypoints is taken. Returned sorted by the index in image 0."""
    order = np.argsort(-scores, kind="stable")
    used0, used1, keep = set(), set(), []
    for k in order:
        i, j = int(matches[k, 0]), int(matches[k, 1])
        if i not in used0 and j not in used1:
            used0.add(i)
            used1.add(j)
            keep.append(k)
    keep = np.asarray(keep, np.int64)
    keep = keep[np.argsort(matches[keep, 0], kind="stable")]
    return matches[keep].reshape(-1, 2), scores[keep]


class _Image:
    """The occupied cells of one image: cell → keypoint index, best position and score."""

    def __init__(self):
        self.index: dict[tuple[int, int], int] = {}
        self.points: list[np.ndarray] = []
        self.scores: list[float] = []

    def assign(self, points: np.ndarray, scores: np.ndarray, cell: float) -> np.ndarray:
        ids = np.empty(len(points), np.int64)
        for i, (c, p, s) in enumerate(zip(map(tuple, cell_of(points, cell)), points, scores)):
            k = self.index.get(c)
            if k is None:
                k = self.index[c] = len(self.points)
                self.points.append(p)
                self.scores.append(float(s))
            elif s > self.scores[k]:
                self.points[k], self.scores[k] = p, float(s)
            ids[i] = k
        return ids


def quantise(pairs: Iterable[PairPoints], cell: float = DEFAULT_CELL) -> Quantised:
    """Keypoints of every image over all pairs, and each pair's matches re-indexed to them.

    The result depends only on the pairs' content and order (the caller sorts them)."""
    if not cell > 0:
        raise ConfigError(f"dense keypoint cell size must be > 0 px, got {cell}")
    images: dict[str, _Image] = {}
    out = Quantised()
    for p in pairs:
        p0 = np.asarray(p.points0, np.float64).reshape(-1, 2)
        p1 = np.asarray(p.points1, np.float64).reshape(-1, 2)
        s = np.asarray(p.scores, np.float32).reshape(-1)
        if not len(p0) == len(p1) == len(s):
            raise ValueError(f"pair {p.name0} {p.name1}: {len(p0)}, {len(p1)} points, {len(s)}")
        i0 = images.setdefault(p.name0, _Image()).assign(p0, s, cell)
        i1 = images.setdefault(p.name1, _Image()).assign(p1, s, cell)
        out.matches[(p.name0, p.name1)] = one_to_one(np.stack([i0, i1], -1).reshape(-1, 2), s)
    for name, im in images.items():
        out.keypoints[name] = np.asarray(im.points, np.float32).reshape(-1, 2)
        out.scores[name] = np.asarray(im.scores, np.float32)
    return out
