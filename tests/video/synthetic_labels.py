"""Pseudo labels with exact truth, written in GIM's layout (reference-methods §2.2).

A planar scene seen along a smooth camera path (per-frame homographies with translation, zoom,
rotation and perspective). Each labeller ("method") detects its own fixed world points in every
frame, with a fixed per-frame detection jitter, so labels of (a, b) and (b, c) share the exact
frame-b positions that GIM's `link` relies on (a real detector re-detects the same corner).
A fraction of rows are outliers: a detection in frame a paired with a random detection in b.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

W, H = 640, 480


def frame_homography(t: float) -> np.ndarray:
    """World plane (frame-0 pixels) → frame t."""
    c = np.array([[1, 0, W / 2], [0, 1, H / 2], [0, 0, 1.0]])
    th = np.deg2rad(0.12 * t)
    s = 1.0 + 0.002 * t
    A = np.array(
        [
            [s * np.cos(th), -s * np.sin(th), -1.6 * t],
            [s * np.sin(th), s * np.cos(th), -0.5 * t],
            [2e-6 * t, 1e-6 * t, 1.0],
        ]
    )
    return c @ A @ np.linalg.inv(c)


def apply_h(Hm: np.ndarray, p: np.ndarray) -> np.ndarray:
    q = np.c_[p, np.ones(len(p))] @ Hm.T
    return q[:, :2] / q[:, 2:]


def gt_error(labels: np.ndarray, i0: int, i1: int) -> np.ndarray:
    """Distance (px) of each label's right point to its left point moved by the GT homography."""
    Hab = frame_homography(i1) @ np.linalg.inv(frame_homography(i0))
    return np.linalg.norm(apply_h(Hab, labels[:, :2].astype(np.float64)) - labels[:, 2:], axis=1)


class Scene:
    def __init__(self, methods=("SIFT", "GIM_GLUE"), points=9000, jitter=0.25, seed=0):
        rng = np.random.default_rng(seed)
        self.methods = methods
        self.jitter = jitter
        # world points over the union of the views along the path
        self.world = {
            m: np.c_[rng.uniform(-150, W + 400, points), rng.uniform(-200, H + 250, points)]
            for m in methods
        }

    def detections(self, m: str, t: int):
        """(N, 2) positions of method m's world points in frame t, and their visibility."""
        k = self.methods.index(m)
        rng = np.random.default_rng(10_000 * k + t)
        p = apply_h(frame_homography(t), self.world[m]) + rng.normal(
            0, self.jitter, (len(self.world[m]), 2)
        )
        vis = (p[:, 0] >= 2) & (p[:, 0] <= W - 3) & (p[:, 1] >= 2) & (p[:, 1] <= H - 3)
        return p, vis

    def labels(self, m: str, r: str, a: int, b: int, keep=0.7, outliers=0.02) -> np.ndarray:
        pa, va = self.detections(m, a)
        pb, vb = self.detections(m, b)
        rng = np.random.default_rng(hash((m, r, a, b)) % 2**32)
        both = np.flatnonzero(va & vb)
        sel = both[rng.random(len(both)) < keep]
        rows = np.c_[pa[sel], pb[sel]]
        n_out = int(round(outliers * len(sel)))
        if n_out:
            src = rng.choice(np.flatnonzero(va), n_out)
            dst = rng.choice(np.flatnonzero(vb), n_out)
            rows = np.r_[rows, np.c_[pa[src], pb[dst]]]
        return rows[rng.permutation(len(rows))].astype(np.float32)


def write_gim_labels(
    root: Path,
    scene: Scene,
    video: str = "walk test",
    frames: int = 161,
    gap: int = 5,
    skips=(5, 10, 20),
    resizes=("F", "T"),
) -> Path:
    """Write every method x resize x skip label set of `video` in GIM's layout; returns root."""
    root = Path(root)
    listing = list(range(0, frames, gap))
    for m in scene.methods:
        for r in resizes:
            for s in skips:
                inner = f"{video} WH {W:4} {H:4} RG {0:4} {frames:4} SP {s} {len(video)}"
                d = root / f"WALK {m} [R] {r} [S] {s:2}" / inner
                d.mkdir(parents=True, exist_ok=True)
                idxs, nums = [], []
                for a in listing:
                    b = a + s
                    if b >= frames:
                        break
                    lab = scene.labels(m, r, a, b)
                    np.save(d / f"{np.array([a, b])}.npy", lab)
                    idxs.append([a, b])
                    nums.append(len(lab))
                np.save(d / "idxs.npy", np.array(idxs, np.int64))
                np.save(d / "nums.npy", np.array(nums, np.int64))
    return root


def render_frames(folder: Path, frames: int = 161, gap: int = 5, seed: int = 0) -> Path:
    """The frame cache (`{idx}.png`) of the scene: a smooth random texture on the world plane."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.uniform(0, 255, (H * 2, W * 2, 3)).astype(np.uint8)
    texture = cv2.GaussianBlur(noise, (0, 0), 2.5)
    texture = cv2.normalize(texture, None, 0, 255, cv2.NORM_MINMAX)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    shift = np.array([[1, 0, -150], [0, 1, -200], [0, 0, 1.0]])  # texture pixel → world
    for t in range(0, frames, gap):
        img = cv2.warpPerspective(texture, frame_homography(t) @ shift, (W, H))
        cv2.imwrite(str(folder / f"{t}.png"), img)
    return folder
