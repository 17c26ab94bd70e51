"""Tiled extraction for any sparse extractor: bounded memory at native resolution.

A network's activations grow with the image (ALIKED at 25 MP peaks at ~13 GB), so a large
image is cut into `tile`×`tile` windows that overlap by `overlap` pixels. The overlap rule:
each tile *owns* the part of itself nearer to its centre than to its neighbours' (its core: the
seam between two tiles is the middle of their overlap), and keeps only keypoints in its core, so
each kept keypoint is at least overlap/2 pixels from the border of the window it was computed in
(padding effects of the network stay outside) and the cores partition the image: no location is
kept twice. Detections of one corner that land on both sides of a seam are then suppressed by a
radius NMS across tiles (`nms_radius`, the better score wins), and the global top-k by score
(`max_num_keypoints` of the extractor) is taken over all tiles. Each tile's own top-k is the same
k, so the global top-k is exact: a keypoint of the global top-k is in the top-k of its own tile.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ConfigError

TILE_OVERLAP = 128  # pixels; see the module docstring
TILE_ALIGN = 32  # window starts on multiples of this (ALIKED/DISK/SuperPoint strides divide it)


def tile_windows(length: int, tile: int, overlap: int, align: int = TILE_ALIGN) -> list[tuple]:
    """Windows [start, end) covering [0, length): about `tile` long, overlapping by at least
    `overlap`, starts on multiples of `align` (the network's total stride, so every window sees
    the same pooling grid as the whole image; the last window absorbs the rounding)."""
    if length <= tile:
        return [(0, length)]
    stride = tile - overlap
    if stride <= align:
        raise ConfigError(f"extractor.tile ({tile}) must exceed tile_overlap ({overlap}) + {align}")
    n = max(2, int(np.ceil((length - overlap) / stride)))
    starts = [int(i * (length - tile) / (n - 1)) // align * align for i in range(n)]
    ends = [min(s + tile, length) for s in starts[:-1]] + [length]
    return list(zip(starts, ends, strict=True))


def _cores(windows: list[tuple]) -> list[tuple[float, float]]:
    """[lo, hi) owned by each window: seams at the middle of each overlap."""
    seams = [(windows[i][1] + windows[i + 1][0]) / 2 - 0.5 for i in range(len(windows) - 1)]
    return list(zip([-np.inf, *seams], [*seams, np.inf], strict=True))


def _per_keypoint(pred: dict, n: int) -> dict:
    return {
        k: v[0]
        for k, v in pred.items()
        if isinstance(v, torch.Tensor) and v.ndim >= 2 and v.shape[0] == 1 and v.shape[1] == n
    }


def _cross_tile_nms(kpts: np.ndarray, scores: np.ndarray, tiles: np.ndarray, radius: float):
    """Keep mask: a keypoint within `radius` of a better-scored one from another tile is dropped."""
    keep = np.ones(len(kpts), bool)
    if radius <= 0 or len(kpts) < 2:
        return keep
    from scipy.spatial import cKDTree

    pairs = cKDTree(kpts).query_pairs(radius, output_type="ndarray")
    pairs = pairs[tiles[pairs[:, 0]] != tiles[pairs[:, 1]]]
    for i, j in pairs[np.argsort(-np.maximum(scores[pairs[:, 0]], scores[pairs[:, 1]]))]:
        if keep[i] and keep[j]:
            keep[j if scores[i] >= scores[j] else i] = False
    return keep


@torch.inference_mode()
def extract_tiled(extractor, image: torch.Tensor, tile: int, overlap: int = TILE_OVERLAP) -> dict:
    """`extractor({"image": image})` computed window by window (see the module docstring).

    Returns the per-keypoint outputs (keypoints, keypoint_scores, descriptors and any other
    (1, N, ...) tensor such as scales/oris) in `image` pixels, batch dimension 1."""
    h, w = image.shape[-2:]
    ys, xs = tile_windows(h, tile, overlap), tile_windows(w, tile, overlap)
    cy, cx = _cores(ys), _cores(xs)
    parts, tile_ids = [], []
    for iy, (y0, y1) in enumerate(ys):
        for ix, (x0, x1) in enumerate(xs):
            window = image[..., y0:y1, x0:x1].contiguous()
            pred = extractor({"image": window})
            out = _per_keypoint(pred, pred["keypoints"].shape[1])
            kp = out["keypoints"].float() + torch.tensor([x0, y0], device=window.device)
            (lx, hx), (ly, hy) = cx[ix], cy[iy]
            inside = (kp[:, 0] >= lx) & (kp[:, 0] < hx) & (kp[:, 1] >= ly) & (kp[:, 1] < hy)
            out["keypoints"] = kp.to(out["keypoints"].dtype)
            parts.append({k: v[inside].cpu() for k, v in out.items()})
            tile_ids.append(np.full(int(inside.sum()), iy * len(xs) + ix))
    keys = [k for k in parts[0] if all(k in p for p in parts)]
    cat = {k: torch.cat([p[k] for p in parts]) for k in keys}
    scores = cat["keypoint_scores"].float().numpy()
    conf = getattr(extractor, "conf", {})
    radius = float(conf.get("nms_radius", 2) or 0) if hasattr(conf, "get") else 2.0
    keep = _cross_tile_nms(
        cat["keypoints"].float().numpy(), scores, np.concatenate(tile_ids), radius
    )
    idx = np.flatnonzero(keep)
    idx = idx[np.argsort(-scores[idx], kind="stable")]
    k = conf.get("max_num_keypoints") if hasattr(conf, "get") else None
    if k is not None and int(k) > 0:
        idx = idx[: int(k)]
    idx = torch.from_numpy(np.sort(idx))
    return {key: v[idx][None] for key, v in cat.items()}
