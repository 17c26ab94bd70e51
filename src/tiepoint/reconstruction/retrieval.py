"""An offline global image descriptor for retrieval pairs: VLAD over the stored local descriptors.

Choice: NetVLAD / MegaLoc retrieve better, but need extra weights and a second network pass.
VLAD (Jégou et al., CVPR 2010) aggregates the local descriptors we have already extracted:
a k-means vocabulary is fitted on a sample of this image set's own descriptors, each image sums
the residuals of its descriptors to their nearest centre, and the result is intra-normalised
(per centre), power-normalised (signed square root) and L2-normalised (Arandjelović & Zisserman,
"All about VLAD", CVPR 2013). It needs no weights, works with any extractor and is deterministic
(fixed seed, k-means++ initialisation, score-ordered sampling). It is stored as hloc's
`global-feats.h5` (`global_descriptor` (D,) per image).
"""

from __future__ import annotations

import os

import h5py
import numpy as np

from ..atomic import atomic_path


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def kmeans(x: np.ndarray, k: int, iters: int = 25, seed: int = 0) -> np.ndarray:
    """Plain k-means with k-means++ seeding; returns the (k, D) centres."""
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else None
        centres.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres).astype(np.float32)
    for _ in range(iters):
        assign = _nearest(x, c)
        new = np.zeros_like(c)
        np.add.at(new, assign, x)
        counts = np.bincount(assign, minlength=k)[:, None]
        empty = counts[:, 0] == 0
        new[~empty] /= counts[~empty]
        new[empty] = c[empty]
        if np.allclose(new, c, atol=1e-6):
            break
        c = new
    return c


def _nearest(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    d = (x**2).sum(1, keepdims=True) - 2 * x @ c.T + (c**2).sum(1)[None]
    return d.argmin(1)


def _top_descriptors(arrays: dict, per_image: int) -> np.ndarray:
    """(n, D) L2-normalised local descriptors, the highest-scored first."""
    desc = np.asarray(arrays["descriptors"], np.float32).T  # stored (D, N)
    scores = arrays.get("scores")
    if scores is not None and len(scores) == len(desc):
        desc = desc[np.argsort(-np.asarray(scores), kind="stable")]
    return _normalise(desc[:per_image])


def vlad(local: list[np.ndarray], centres: np.ndarray) -> np.ndarray:
    """(N images, k·D) VLAD vectors from per-image local descriptors."""
    k, d = centres.shape
    out = np.zeros((len(local), k * d), np.float32)
    for i, x in enumerate(local):
        if len(x) == 0:
            continue
        assign = _nearest(x, centres)
        v = np.zeros((k, d), np.float32)
        np.add.at(v, assign, x - centres[assign])
        v = _normalise(v)  # intra-normalisation
        v = np.sign(v) * np.sqrt(np.abs(v))
        out[i] = _normalise(v.reshape(-1))
    return out


def global_descriptors(
    store,
    names: list[str],
    num_centres: int = 32,
    per_image: int = 1024,
    max_train: int = 50_000,
    seed: int = 0,
) -> np.ndarray:
    """VLAD descriptors of `names`, reading local features from a `FeatureStore`."""
    local = [_top_descriptors(store.arrays(n), per_image) for n in names]
    pool = np.concatenate([x for x in local if len(x)], 0) if any(len(x) for x in local) else None
    if pool is None:
        return np.zeros((len(names), 1), np.float32)
    if len(pool) > max_train:
        pool = pool[np.random.default_rng(seed).choice(len(pool), max_train, replace=False)]
    centres = kmeans(pool, num_centres, seed=seed)
    return vlad(local, centres)


def write_global_descriptors(path: str | os.PathLike, names: list[str], desc: np.ndarray) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for n, d in zip(names, desc):
            f.create_group(n).create_dataset("global_descriptor", data=d)
