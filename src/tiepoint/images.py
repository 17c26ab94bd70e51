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

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, TiffImagePlugin, UnidentifiedImageError

from .errors import ImageError

Image.MAX_IMAGE_PIXELS = (
    400_000_000  # large aerial images are legitimate; we downscale before decoding to float
)

ImageLike = str | os.PathLike | np.ndarray | torch.Tensor


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
    """Inverse of `raw_to_upright`: (N,2) upright points → the stored image's pixels.

    Every orientation is its own inverse except the two quarter turns, 6 and 8, which undo each
    other; the inverse map runs on the upright image's size."""
    inverse = {6: 8, 8: 6}.get(orientation, orientation)
    return raw_to_upright(points, inverse, upright_size(raw_size, orientation))


REDUCE_ABOVE = 2
"""Reduce while decoding when the long side exceeds REDUCE_ABOVE × max_size (the decode limit)."""

_GRAY = {"1": "L", "L": "L", "LA": "L", "La": "L"}  # everything else 8-bit becomes RGB
_DEEP = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")  # > 8 bits: scaled in numpy, not by PIL


def _orient_array(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Apply EXIF `orientation` to an H×W×C array exactly as `ImageOps.exif_transpose` would."""
    return {
        1: lambda a: a,
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: a.swapaxes(0, 1)[:, ::-1],
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: a.swapaxes(0, 1)[::-1],
    }[orientation](arr)


def _reduce_array(arr: np.ndarray, factor: int) -> np.ndarray:
    """Box-average H×W×C by an integer factor to ⌈H/f⌉×⌈W/f⌉, as PIL's `reduce` does."""
    if factor < 2:
        return arr
    h, w = arr.shape[:2]
    out = cv2.resize(arr, (-(-w // factor), -(-h // factor)), interpolation=cv2.INTER_AREA)
    return out.reshape(out.shape[0], out.shape[1], arr.shape[2])


def _to_unit(arr: np.ndarray) -> np.ndarray:
    """Integer samples → [0, 1] by their type's range; floats are taken as [0, 1] intensities.

    Float values outside [0, 1] are clipped (not rescaled: a per-image min/max stretch would make
    the same scene read differently in every file) and NaN/±inf become 0/1/0.
    """
    if arr.dtype == np.uint8:
        return arr.astype(np.float32) / 255.0
    if np.issubdtype(arr.dtype, np.integer):
        top = np.iinfo(arr.dtype).max
        return (arr.astype(np.float32) / top).clip(0, 1)
    return np.nan_to_num(arr.astype(np.float32), nan=0.0, posinf=1.0, neginf=0.0).clip(0, 1)


def _factor(size: tuple[int, int], max_size: int | None) -> int:
    return max(size) // max_size if max_size and max(size) > REDUCE_ABOVE * max_size else 1


def _decode_pil(img: Image.Image, max_size: int | None) -> np.ndarray:
    """An open PIL image (raw frame) → float32 H×W×C in [0, 1], C ∈ {1, 3}; alpha is dropped."""
    if img.mode in _DEEP:
        arr = np.asarray(img)
        if img.mode == "I" and arr.max(initial=0) <= 255:
            arr = arr.astype(np.uint8)  # 8-bit data promoted to 32-bit ints (e.g. L → I)
        elif img.mode == "I":
            arr = arr.clip(0, 65535).astype(np.uint16)  # 32-bit TIFF/PNG ints: 16-bit range
        arr = _to_unit(arr)[..., None]
        return _reduce_array(arr, _factor(img.size, max_size))
    factor = _factor(img.size, max_size)
    if factor > 1 and img.format == "JPEG":
        img.draft(img.mode, (img.size[0] // factor, img.size[1] // factor))  # DCT scaling
        factor = max(img.size) // max_size  # draft chose a scale ≥ the request
    img = img.convert(_GRAY.get(img.mode, "RGB"))  # palette/bilevel cannot be box-averaged
    if factor > 1:
        img = img.reduce(factor)
    arr = np.asarray(img, dtype=np.float32) / 255.0
    return arr[..., None] if arr.ndim == 2 else arr


def _decode_cv2(data: bytes, max_size: int | None) -> tuple[np.ndarray, tuple[int, int]] | None:
    """OpenCV's decoder for what PIL cannot read (e.g. float32/uint16 RGB TIFF); None if it fails.

    Also returns the decoded (W, H), before any reduction.
    """
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # we raise our own error
    try:
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    finally:
        cv2.utils.logging.setLogLevel(level)
    if arr is None or arr.ndim not in (2, 3) or arr.size == 0:
        return None
    if arr.ndim == 2:
        arr = arr[..., None]
    arr = arr[..., 2::-1] if arr.shape[2] >= 3 else arr[..., :1]  # BGR(A) → RGB, gray+alpha → gray
    arr, size = _to_unit(np.ascontiguousarray(arr)), (arr.shape[1], arr.shape[0])
    return _reduce_array(arr, _factor(size, max_size)), size


_SAMPLE_FORMAT = {1: "uint", 2: "int", 3: "float"}
_COMPRESSION = {1: "uncompressed", 5: "LZW", 7: "JPEG", 8: "Deflate", 32773: "PackBits"}
_COMPRESSION |= {34887: "LERC", 34925: "LZMA", 50000: "ZSTD", 50001: "WebP", 50002: "JPEG XL"}


def _describe(path: Path, head: bytes) -> str | None:
    """'TIFF with 3 float32 channels' for a file no decoder could read; None if not an image."""
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        try:
            with open(path, "rb") as f:
                ifd = TiffImagePlugin.ImageFileDirectory_v2(f.read(8))
                f.seek(ifd.next)
                ifd.load(f)
            n = int(ifd.get(277, 1))
            bits = ifd.get(258, (1,))
            kind = _SAMPLE_FORMAT.get(int(np.ravel(ifd.get(339, 1))[0]), "unknown")
            comp = int(ifd.get(259, 1))
            comp = _COMPRESSION.get(comp, f"compression {comp}")
            return f"TIFF with {n} {kind}{int(np.ravel(bits)[0])} channel{'s' * (n != 1)} ({comp})"
        except (OSError, SyntaxError, ValueError, TypeError, KeyError, IndexError):
            return "TIFF"
    for magic, name in [(b"\x89PNG", "PNG"), (b"\xff\xd8", "JPEG"), (b"BM", "BMP")]:
        if head.startswith(magic):
            return name
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    return None


def _raw_frame(img: Image.Image, path: Path, max_size: int | None) -> np.ndarray:
    """PIL's decode, except deep multi-channel TIFFs (PIL keeps only 8 bits) and TIFFs PIL fails
    on (Pillow 12.x cannot read back its own uncompressed YCbCr TIFFs): OpenCV's."""
    if img.format == "TIFF" and img.mode not in _DEEP and max(img.tag_v2.get(258, (8,))) > 8:
        decoded = _decode_cv2(path.read_bytes(), max_size)
        if decoded is not None:
            return decoded[0]
    try:
        return _decode_pil(img, max_size)
    except OSError:
        decoded = _decode_cv2(path.read_bytes(), max_size) if img.format == "TIFF" else None
        if decoded is None:
            raise
        return decoded[0]


def read_image(
    path: str | os.PathLike, max_size: int | None = None
) -> tuple[np.ndarray, tuple[int, int]]:
    """Read an image file as float32 H×W×C (C ∈ {1, 3}) in [0, 1], EXIF orientation applied.

    Every PIL mode is read (bilevel, palette, gray/colour with alpha, 16/32-bit integer, float,
    CMYK, YCbCr); 8-bit samples map by /255, 16-bit by /65535, floats are clipped to [0, 1].
    Files PIL cannot open (e.g. OpenCV's float32 RGB TIFFs) go to OpenCV. Returns the array and
    the original upright (W, H). When `max_size` is given and the long side exceeds
    REDUCE_ABOVE × max_size, the image is reduced while decoding (JPEG draft, integer box
    average), so a 12000×9000 photo never becomes a multi-GB float array; the caller still
    resizes exactly afterwards.
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
            o = int(img.getexif().get(EXIF_ORIENTATION_TAG, 1))
            o = o if 1 <= o <= 8 else 1  # the value exif_orientation() reports
            size = upright_size(img.size, o)
            arr = _orient_array(_raw_frame(img, path, max_size), o)
    except UnidentifiedImageError:
        data = path.read_bytes()
        decoded = _decode_cv2(data, max_size)  # no EXIF applied: exif_orientation() says 1 too
        if decoded is None:
            what = _describe(path, data[:16])
            if what is None:
                raise ImageError(f"{path}: not an image file (unrecognised format)") from None
            raise ImageError(
                f"{path}: {what} could not be decoded (neither PIL nor OpenCV supports it)"
            ) from None
        arr, size = decoded
    except Image.DecompressionBombError as e:
        raise ImageError(f"{path}: too large to decode ({e})") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{path}: corrupt or truncated image ({str(e).splitlines()[0]})") from None
    return np.ascontiguousarray(arr), size


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


def target_size(
    size: tuple[int, int], resize: int | None, side: str = "long", multiple: int | None = None
) -> tuple[int, int]:
    """(W, H) after resizing `side` ('long' | 'short') to `resize` pixels (None: unchanged), then,
    with `multiple`, each side floored to a multiple of it (GIM's inputs: ×8 at native size)."""
    w, h = size
    if resize:
        s = resize / (max(w, h) if side == "long" else min(w, h))
        w, h = max(1, int(round(w * s))), max(1, int(round(h * s)))
    if multiple:
        m = int(multiple)
        w, h = max(w // m, 1) * m, max(h // m, 1) * m
    return w, h


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
    image: ImageLike,
    resize: int | None = None,
    side: str = "long",
    name: str | None = None,
    multiple: int | None = None,
) -> LoadedImage:
    """`image` resized by `target_size(size, resize, side, multiple)`; the scale is per axis."""
    name = name or (str(image) if isinstance(image, (str, os.PathLike)) else "image")
    t, size = to_tensor(image, name=name, max_size=resize)
    # `t` may already be reduced at decode time: the target and scale come from the original size
    t, _ = resize_image(t, resize, side, size=target_size(size, resize, side, multiple))
    scale = np.array([t.shape[-1] / size[0], t.shape[-2] / size[1]])
    return LoadedImage(t, size, scale)


def rgb_to_gray(image: torch.Tensor) -> torch.Tensor:
    if image.shape[1] == 1:
        return image
    w = torch.tensor([0.299, 0.587, 0.114], dtype=image.dtype, device=image.device).view(1, 3, 1, 1)
    return (image * w).sum(1, keepdim=True)


def gray_to_rgb(image: torch.Tensor) -> torch.Tensor:
    return image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
