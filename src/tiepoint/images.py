"""Robust image loading and the one coordinate convention.

Convention: keypoints are in pixels of the *original* image with pixel centres at integer
coordinates (the top-left pixel's centre is (0, 0)). Resizing by a factor s maps x → (x + 0.5)·s − 0.5;
COLMAP's +0.5 (corner) convention is applied only at the COLMAP boundary.

EXIF orientation: images are read upright (as displayed), so `Matcher.extract` / `tiepoint match`
keypoints are in the display frame. COLMAP works in the stored (raw) frame, so reconstruction maps
keypoints to it with `upright_to_raw` (as COLMAP 4.2 does) and records the orientation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

Image.MAX_IMAGE_PIXELS = (
    400_000_000  # large aerial images are legitimate; we downscale before decoding to float
)

ImageLike = str | os.PathLike | np.ndarray | torch.Tensor


def _pil_to_array(img: Image.Image, name: str) -> np.ndarray:
    """PIL image (any mode) → float32 H×W×C in [0, 1], C ∈ {1, 3}; alpha is dropped."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float32)
        return (arr / (65535.0 if arr.max() > 255 or mode.startswith("I;16") else 255.0))[
            ..., None
        ].clip(0, 1)
    if mode == "F":
        return np.asarray(img, dtype=np.float32)[..., None].clip(0, 1)
    if mode in ("L", "1"):
        return (np.asarray(img.convert("L"), dtype=np.float32) / 255.0)[..., None]
    if mode not in ("RGB",):
        img = img.convert("RGB")
    return np.asarray(img, dtype=np.float32) / 255.0


EXIF_ORIENTATION_TAG = 0x0112


def exif_orientation(path: str | os.PathLike) -> int:
    """The EXIF orientation (1–8) of an image file, 1 when absent or invalid; reads the header."""
    try:
        with Image.open(path) as img:
            o = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
    except (OSError, SyntaxError, ValueError, TypeError):
        return 1
    return o if 1 <= o <= 8 else 1  # the same tag ImageOps.exif_transpose applies


def upright_size(raw_size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """(W, H) as displayed: orientations 5–8 swap width and height."""
    w, h = raw_size
    return (h, w) if orientation >= 5 else (w, h)


def raw_to_upright(points: np.ndarray, orientation: int, raw_size: tuple[int, int]) -> np.ndarray:
    """Map (N,2) points of the stored image to the upright one (pixel centres at integers)."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    x, y = p[:, 0], p[:, 1]
    w, h = raw_size[0] - 1, raw_size[1] - 1
    u, v = {
        1: (x, y),
        2: (w - x, y),
        3: (w - x, h - y),
        4: (x, h - y),
        5: (y, x),
        6: (h - y, x),
        7: (h - y, w - x),
        8: (y, w - x),
    }[orientation]
    return np.stack([u, v], -1).astype(np.asarray(points).dtype, copy=False)


def upright_to_raw(points: np.ndarray, orientation: int, raw_size: tuple[int, int]) -> np.ndarray:
    """Inverse of `raw_to_upright`: (N,2) upright points → the stored image's pixels."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    u, v = p[:, 0], p[:, 1]
    w, h = raw_size[0] - 1, raw_size[1] - 1
    x, y = {
        1: (u, v),
        2: (w - u, v),
        3: (w - u, h - v),
        4: (u, h - v),
        5: (v, u),
        6: (v, h - u),
        7: (w - v, h - u),
        8: (w - v, u),
    }[orientation]
    return np.stack([x, y], -1).astype(np.asarray(points).dtype, copy=False)


def read_image(
    path: str | os.PathLike, max_size: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file as float32 H×W×C in [0, 1] with its EXIF orientation applied.

    Returns the array and the original (W, H). When `max_size` is given and the image is larger,
    it is reduced while decoding (JPEG draft / integer `reduce`), so a 12000×9000 photo never
    becomes a multi-GB float array; the caller still resizes exactly afterwards.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: no such file")
    if path.is_dir():
        raise ImageError(f"{path}: is a directory, not an image")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: empty file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            size = img.size
            if max_size and max(size) > 2 * max_size:
                factor = max(size) // max_size  # >= 2; the exact resize happens later
                if img.format == "JPEG":
                    img.draft(img.mode, (size[0] // factor, size[1] // factor))
                img = img.reduce(factor) if img.mode not in ("I;16", "I;16B", "I;16L") else img
            img.load()
            arr = _pil_to_array(img, str(path))
    except UnidentifiedImageError:
        raise ImageError(f"{path}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({str(e).splitlines()[0]})") from None
    return arr, size


def to_tensor(
    image: ImageLike, name: str = "image", max_size: int | None = None
) -> tuple[torch.Tensor, tuple[int, int]]:
    """Any accepted input → (1, C, H, W) float tensor in [0, 1] and the original (W, H).

    Arrays may be H×W, H×W×C (uint8, uint16 or float in [0, 1]); tensors C×H×W or 1×C×H×W float.
    """
    if isinstance(image, (str, os.PathLike)):
        arr, size = read_image(image, max_size)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
        if min(size) < 2:
            raise ImageError(f"{name}: image of size {size[0]}×{size[1]} is too small to match")
        return t, size
    if isinstance(image, np.ndarray):
        arr = image
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
            raise ImageError(f"{name}: array of shape {image.shape} is not an H×W[×C] image")
        arr = arr[..., :3]
        if arr.dtype == np.uint8:
            arr = arr.astype(np.float32) / 255.0
        elif arr.dtype == np.uint16:
            arr = arr.astype(np.float32) / 65535.0
        else:
            arr = arr.astype(np.float32)
        t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1)[None]
    elif isinstance(image, torch.Tensor):
        t = image
        if t.ndim == 2:
            t = t[None]
        if t.ndim == 3:
            t = t[None]
        if t.ndim != 4 or t.shape[0] != 1 or t.shape[1] not in (1, 3):
            raise ImageError(
                f"{name}: tensor of shape {tuple(image.shape)} is not (C,H,W) or (1,C,H,W)"
            )
        t = t.float() / 255.0 if not t.is_floating_point() else t.float()
    else:
        raise ImageError(f"{name}: unsupported image type {type(image).__name__}")
    if min(t.shape[-2:]) < 2:
        raise ImageError(f"{name}: image of size {t.shape[-1]}×{t.shape[-2]} is too small to match")
    return t, (t.shape[-1], t.shape[-2])


def target_size(size: tuple[int, int], resize: int | None, side: str = "long") -> tuple[int, int]:
    """(W, H) after resizing `side` ('long' | 'short') to `resize` pixels (None: unchanged)."""
    w, h = size
    if not resize:
        return w, h
    s = resize / (max(w, h) if side == "long" else min(w, h))
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def resize_image(
    image: torch.Tensor, resize: int | None, side: str = "long", size: tuple[int, int] | None = None
) -> tuple[torch.Tensor, np.ndarray]:
    """Resize (1,C,H,W) so its `side` equals `resize` (or to the exact (W, H) `size`).

    Returns the image and the scale (sx, sy) mapping input pixels to output pixels:
    x' = (x + 0.5)·sx − 0.5.
    """
    h, w = image.shape[-2:]
    nw, nh = size or target_size((w, h), resize, side)
    if (nh, nw) != (h, w):
        antialias = nh < h or nw < w
        image = F.interpolate(
            image, size=(nh, nw), mode="bilinear", align_corners=False, antialias=antialias
        )
    return image, np.array([nw / w, nh / h])


def scale_points(points: torch.Tensor | np.ndarray, scale) -> torch.Tensor | np.ndarray:
    """Map points from one resolution to another under the pixel-centre convention."""
    if isinstance(points, torch.Tensor):
        scale = torch.as_tensor(np.asarray(scale), dtype=points.dtype, device=points.device)
    return (points + 0.5) * scale - 0.5


@dataclass
class LoadedImage:
    """An image ready for a network plus what is needed to map keypoints back."""

    tensor: torch.Tensor  # (1, C, h, w) resized, float [0, 1]
    original_size: tuple[int, int]  # (W, H) of the original image
    scale: np.ndarray  # original → resized (sx, sy)


def load(
    image: ImageLike, resize: int | None = None, side: str = "long", name: str | None = None
) -> LoadedImage:
    name = name or (str(image) if isinstance(image, (str, os.PathLike)) else "image")
    t, size = to_tensor(image, name=name, max_size=resize)
    # `t` may already be reduced at decode time: the target and scale come from the original size
    t, _ = resize_image(t, resize, side, size=target_size(size, resize, side))
    scale = np.array([t.shape[-1] / size[0], t.shape[-2] / size[1]])
    return LoadedImage(t, size, scale)


def rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    if image.shape[1] == 1:
        return image
    w = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def gray_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
