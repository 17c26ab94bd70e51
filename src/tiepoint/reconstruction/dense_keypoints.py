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


# ---- the reconstruction's files: raw dense matches in, hloc's features.h5 / matches.h5 out ------


def pair_record(result, orientation0: int, orientation1: int) -> dict[str, np.ndarray]:
    """A dense `MatchResult` (upright frame, sampled point i ↔ point i) → the arrays stored per
    pair in dense-matches.h5: keypoints and sizes in the stored (raw) frame COLMAP reads."""
    from . import features_io as fio

    result.dense = None  # the warp is not needed past sampling, and large
    arrays = result.to_arrays(keypoints=True)
    for k, o in ((0, orientation0), (1, orientation1)):
        side = {"keypoints": arrays[f"keypoints{k}"], "image_size": arrays[f"image_size{k}"]}
        raw = fio.to_raw_frame(side, o)
        arrays[f"keypoints{k}"] = np.asarray(raw["keypoints"], np.float32)
        arrays[f"image_size{k}"] = raw["image_size"]
        arrays[f"exif_orientation{k}"] = np.asarray(o, np.int64)
    return arrays


def write_quantised(
    raw_h5, pairs, names, image_dir, features_h5, matches_h5, identity: dict, cell: float
) -> Quantised:
    """Quantise the raw dense matches of `pairs` (those present in `raw_h5`) and (re)write
    features.h5 (keypoints + scores, no descriptors) and matches.h5 for the images `names`.

    Both files are rebuilt whole, atomically: a keypoint's index depends on every pair."""
    import json

    import h5py
    from PIL import Image

    from ..atomic import atomic_path
    from ..images import exif_orientation
    from ..types import Features, MatchResult, matches_from_arrays
    from . import features_io as fio

    items, sizes, orient = [], {}, {}
    with h5py.File(raw_h5, "r") as f:
        for a, b in sorted(pairs):
            found = fio.find_pair(f, a, b)
            if found is None:  # a failed pair
                continue
            arr = fio.read_group(f, found[0])
            if found[1]:
                a, b = b, a
            m, s = matches_from_arrays(arr)
            for k, n in ((0, a), (1, b)):
                sizes[n] = np.asarray(arr[f"image_size{k}"], np.int64)
                orient[n] = int(arr[f"exif_orientation{k}"])
            items.append(
                PairPoints(a, b, arr["keypoints0"][m[:, 0]], arr["keypoints1"][m[:, 1]], s)
            )
    q = quantise(items, cell)
    tag = json.dumps(identity, sort_keys=True)
    with atomic_path(features_h5) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[fio.IDENTITY_ATTR] = tag
        for n in names:
            if n not in sizes:  # matched with nobody: no keypoints, its size from the file
                with Image.open(image_dir / n) as im:
                    o = exif_orientation(image_dir / n)
                    sizes[n], orient[n] = np.asarray(im.size, np.int64), o
            kp = q.keypoints.get(n, np.zeros((0, 2), np.float32))
            sc = q.scores.get(n, np.zeros(0, np.float32))
            arrays = {"keypoints": kp, "scores": sc, "image_size": sizes[n]}
            arrays["exif_orientation"] = np.asarray(orient[n], np.int64)
            fio.write_group(f, n, arrays, Features.FORMAT)
    with atomic_path(matches_h5) as tmp, h5py.File(tmp, "w") as f:
        f.attrs[fio.IDENTITY_ATTR] = tag
        for (a, b), (m, s) in q.matches.items():
            kp0, kp1 = q.keypoints[a], q.keypoints[b]
            r = MatchResult(kp0, kp1, m, s, tuple(sizes[a]), tuple(sizes[b]))
            fio.write_group(f, fio.names_to_pair(a, b), r.to_arrays(False), MatchResult.FORMAT)
    return q
