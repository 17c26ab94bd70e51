"""A video with exact ground truth: a real photograph seen by a camera moving along a smooth
homography path (zoom, in-plane rotation, perspective tilt, pan), encoded with OpenCV.

Every frame i is `warp(photo, H[i])`, so frame i → frame j is `H[j] @ inv(H[i])` exactly (up to
the codec's pixel noise). It measures label precision per skip and after propagation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path
from ..errors import VideoError


@dataclass
class SyntheticVideo:
    path: Path
    homographies: np.ndarray  # (N, 3, 3): photo pixels → frame i pixels
    fps: float
    size: tuple[int, int]  # (W, H)

    def gt(self, i: int, j: int) -> np.ndarray:
        """Homography from frame i pixels to frame j pixels."""
        H = self.homographies[j] @ np.linalg.inv(self.homographies[i])
        return H / H[2, 2]


def transfer_error(labels: np.ndarray, H: np.ndarray) -> np.ndarray:
    """‖H·(x0, y0) − (x1, y1)‖ in pixels for (K, 4) labels [x0, y0, x1, y1]."""
    p = np.c_[labels[:, :2], np.ones(len(labels))] @ H.T
    return np.linalg.norm(p[:, :2] / p[:, 2:] - labels[:, 2:4], axis=1)


def camera_path(photo_size, size, num_frames, zoom=(1.6, 1.1), rotation=25.0, tilt=0.2):
    """Per-frame quads in the photo that the frame sees (corners TL, TR, BR, BL), kept inside."""
    W, H = photo_size
    w, h = size
    t = np.linspace(0, 1, num_frames)
    ease = (1 - np.cos(np.pi * t)) / 2  # starts and stops smoothly
    zoom = zoom[0] + (zoom[1] - zoom[0]) * ease  # photo pixels per frame pixel
    theta = np.deg2rad(rotation) * ease
    persp = tilt * np.sin(np.pi * t)  # the top edge narrows, then widens again
    pan = np.stack([0.5 + 0.08 * np.sin(2 * np.pi * t), 0.5 + 0.05 * np.sin(np.pi * t)], -1)
    base = np.array([[-w, -h], [w, -h], [w, h], [-w, h]], np.float64) / 2
    for shrink in 0.95 ** np.arange(60):
        quads = []
        for z, a, p, c in zip(zoom * shrink, theta, persp, pan):
            q = base * z
            q[:2, 0] *= 1 - p
            R = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
            quads.append(q @ R.T + c * [W - 1, H - 1])
        quads = np.array(quads)
        if (quads >= 0).all() and (quads[..., 0] <= W - 1).all() and (quads[..., 1] <= H - 1).all():
            return quads
    raise VideoError(f"photo of {W}×{H} is too small for {w}×{h} frames")


def make_homography_video(
    photo,
    path: str | Path,
    num_frames: int = 81,
    fps: float = 25.0,
    size: tuple[int, int] = (640, 480),
    codec: str = "MJPG",
    **path_options,
) -> SyntheticVideo:
    """Render and encode the video; `photo` is a file or an RGB/gray uint8 array."""
    if isinstance(photo, (str, Path)):
        img = cv2.imread(str(photo), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"{photo}: not a readable image")
    else:
        img = np.asarray(photo)
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR if img.ndim == 2 else cv2.COLOR_RGB2BGR)
    w, h = size
    quads = camera_path((img.shape[1], img.shape[0]), size, num_frames, **path_options)
    corners = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    # render at 2× and average 2×2 blocks (INTER_AREA): anti-aliased, same pixel-centre frame
    up = np.array([[2, 0, 0.5], [0, 2, 0.5], [0, 0, 1.0]])
    Hs = []
    path = Path(path)
    with atomic_path(path, suffix=path.suffix) as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
        if not writer.isOpened():
            raise VideoError(f"{path}: OpenCV cannot write {codec} video")
        for q in quads:
            Hm = cv2.getPerspectiveTransform(q.astype(np.float32), corners).astype(np.float64)
            big = cv2.warpPerspective(img, up @ Hm, (2 * w, 2 * h), flags=cv2.INTER_LINEAR)
            writer.write(cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA))
            Hs.append(Hm / Hm[2, 2])
        writer.release()
    return SyntheticVideo(path, np.array(Hs), fps, size)
