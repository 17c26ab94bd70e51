"""Image loading: every kind of bad or unusual input gets the right result or a one-line ImageError."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from tiepoint import images
from tiepoint.errors import ImageError


def _gradient(w=64, h=48):
    x = np.linspace(0, 1, w)[None].repeat(h, 0)
    y = np.linspace(0, 1, h)[:, None].repeat(w, 1)
    return np.stack([x, y, 1 - x], -1)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b""), "empty file"),
        (lambda p: p.write_bytes(b"this is not an image at all" * 10), "not an image file"),
        (lambda p: p.write_bytes(Path(__file__).read_bytes()[:200]), "not an image file"),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, make, message):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageError, match=message) as e:
        images.load(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_png_is_reported_as_corrupt(tmp_path):
    path = tmp_path / "cut.png"
    Image.fromarray((_gradient(200, 200) * 255).astype(np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:400])
    with pytest.raises(ImageError, match="corrupt or truncated|not an image"):
        images.load(path)


def test_one_pixel_image_is_rejected(tmp_path):
    path = tmp_path / "dot.png"
    Image.new("RGB", (1, 1)).save(path)
    with pytest.raises(ImageError, match="too small"):
        images.load(path)


def test_sixteen_bit_grayscale_png_keeps_its_range(tmp_path):
    arr = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(arr).save(path)
    img = images.load(path)
    assert img.tensor.shape == (1, 1, 48, 64)
    np.testing.assert_allclose(img.tensor[0, 0].numpy(), arr / 65535.0, atol=1e-6)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGBA", 3), ("RGB", 3), ("P", 3)])
def test_modes(tmp_path, mode, channels):
    path = tmp_path / f"img_{mode}.png"
    Image.fromarray((_gradient() * 255).astype(np.uint8)).convert(mode).save(path)
    img = images.load(path)
    assert (
        img.tensor.shape == (1, channels, 48, 64)
        and img.tensor.min() >= 0
        and img.tensor.max() <= 1
    )


def test_exif_orientation_is_applied(tmp_path):
    arr = (_gradient(80, 40) * 255).astype(np.uint8)  # landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, display rotated 90° clockwise → portrait
    path = tmp_path / "rot.jpg"
    Image.fromarray(arr).save(path, exif=exif, quality=95)
    img = images.load(path)
    assert img.original_size == (40, 80)
    # the displayed top-left pixel is the stored bottom-left one
    expected = torch.tensor(arr[-1, 0] / 255.0, dtype=torch.float32)
    torch.testing.assert_close(img.tensor[0, :, 0, 0], expected, atol=0.06, rtol=0)
    # above the decode limit the raw frame is reduced (JPEG draft), then turned upright
    small, size = images.read_image(path, max_size=10)
    assert size == (40, 80) and small.shape == (10, 5, 3)
    np.testing.assert_allclose(small[0, 0], arr[-8:, :8].reshape(-1, 3).mean(0) / 255, atol=0.06)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_point_mapping_matches_pil_exif_transpose(tmp_path, orientation):
    """Every stored pixel lands where PIL's exif_transpose puts it, and the inverse maps it back."""
    raw_size = (7, 4)  # (W, H): odd and even, non-square, so a swapped or mirrored axis shows
    raw = np.arange(28, dtype=np.uint8).reshape(4, 7) * 9  # each pixel has a unique value
    stored = Image.fromarray(raw)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / "o.png"
    stored.save(path, exif=exif)
    assert images.exif_orientation(path) == orientation
    upright = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    np.testing.assert_array_equal(
        images._orient_array(raw[..., None], orientation)[..., 0], upright
    )
    assert images.upright_size(raw_size, orientation) == (upright.shape[1], upright.shape[0])
    ys, xs = np.mgrid[0:4, 0:7]
    pts = np.stack([xs.ravel(), ys.ravel()], -1).astype(np.float32)
    up = images.raw_to_upright(pts, orientation, raw_size)
    assert up.dtype == np.float32
    ui, vi = up[:, 0].astype(int), up[:, 1].astype(int)
    np.testing.assert_array_equal(upright[vi, ui], raw.ravel())
    np.testing.assert_array_equal(images.upright_to_raw(up, orientation, raw_size), pts)
    # sub-pixel points too: the map is affine, so a point between pixels stays between them
    mid = np.array([[0.25, 1.5]], np.float32)
    back = images.upright_to_raw(
        images.raw_to_upright(mid, orientation, raw_size), orientation, raw_size
    )
    np.testing.assert_allclose(back, mid)


def test_huge_image_is_reduced_while_decoding(tmp_path):
    path = tmp_path / "huge.jpg"
    Image.new("RGB", (12000, 9000), (120, 80, 40)).save(path, quality=50)
    img = images.load(path, resize=1024)
    assert img.original_size == (12000, 9000)
    assert img.tensor.shape == (1, 3, 768, 1024)
    # decoded at the JPEG's 1/8 DCT scale, not in full and not reduced a second time
    arr, _ = images.read_image(path, max_size=1024)
    assert arr.shape == (1125, 1500, 3)
    np.testing.assert_allclose(img.scale, [1024 / 12000, 768 / 9000])


def test_resize_convention_maps_pixel_centres():
    # a pixel-centre coordinate x maps to (x + 0.5)·s − 0.5, so the image borders (−0.5, W−0.5) map exactly
    pts = np.array([[-0.5, -0.5], [99.5, 49.5], [10.0, 20.0]])
    out = images.scale_points(pts, np.array([0.5, 0.5]))
    np.testing.assert_allclose(out, [[-0.5, -0.5], [49.5, 24.5], [4.75, 9.75]])
    back = images.scale_points(out, np.array([2.0, 2.0]))
    np.testing.assert_allclose(back, pts)


def test_arrays_and_tensors_are_accepted():
    arr = (_gradient() * 255).astype(np.uint8)
    a = images.load(arr).tensor
    b = images.load(torch.from_numpy(arr).permute(2, 0, 1)).tensor
    c = images.load(arr[..., 0]).tensor
    torch.testing.assert_close(a, b)
    assert c.shape == (1, 1, 48, 64)
    with pytest.raises(ImageError, match="shape"):
        images.load(np.zeros((4, 4, 4, 4)))


def _write_mode(path_stem: Path, mode: str, w: int, h: int) -> tuple[Path, np.ndarray]:
    """Write a w×h image of `mode` and return its path with the expected [0, 1] array.

    The expectation comes from the source data (or the palette looked up in numpy), not from
    the reader under test.
    """
    rng = np.random.default_rng(sum(map(ord, mode)))
    rgb = (rng.random((h, w, 3)) * 255).astype(np.uint8)
    gray = (rng.random((h, w)) * 255).astype(np.uint8)
    alpha = Image.fromarray((rng.random((h, w)) * 255).astype(np.uint8))
    tif = path_stem.with_suffix(".tif")
    png = path_stem.with_suffix(".png")
    if mode in ("cv2-float32", "cv2-uint16"):  # 3-channel TIFFs as OpenCV writes them (BGR)
        if mode == "cv2-float32":
            src = (rng.random((h, w, 3)) * 1.5 - 0.25).astype(np.float32)  # out of [0, 1] too
            expected = src.clip(0, 1)
        else:
            src = (rng.random((h, w, 3)) * 65535).astype(np.uint16)
            expected = src / 65535.0
        assert cv2.imwrite(str(tif), np.ascontiguousarray(src[..., ::-1]))
        return tif, expected
    if mode in ("P", "PA"):
        img = Image.fromarray(rgb).convert("P")
        palette = np.array(img.getpalette(), np.float64).reshape(-1, 3)
        expected = palette[np.asarray(img)] / 255.0
        if mode == "PA":
            img = img.convert("PA")
            img.putalpha(alpha)
        img.save(tif if mode == "PA" else png)  # PNG cannot store PA
        return (tif if mode == "PA" else png), expected
    if mode == "1":
        img = Image.fromarray(gray).convert("1")  # dithered
        img.save(png)
        return png, np.asarray(img, np.float64)[..., None]
    if mode in ("L", "LA"):
        img = Image.fromarray(gray)
        if mode == "LA":
            img = img.convert("LA")
            img.putalpha(alpha)
        img.save(png)
        return png, gray[..., None] / 255.0
    if mode in ("I", "I;16"):
        deep = (rng.random((h, w)) * 65535).astype(np.int32)
        img = Image.fromarray(deep.astype(np.uint16) if mode == "I;16" else deep)
        assert img.mode == mode
        img.save(png if mode == "I;16" else tif)
        return (png if mode == "I;16" else tif), deep[..., None] / 65535.0
    if mode == "F":
        src = (rng.random((h, w)) * 1.5 - 0.25).astype(np.float32)
        Image.fromarray(src).save(tif)
        return tif, src.clip(0, 1)[..., None]
    img = Image.fromarray(rgb)
    if mode == "RGBA":
        img.putalpha(alpha)
    else:
        img = img.convert(mode)  # RGB, CMYK, YCbCr
    img.save(png if mode in ("RGB", "RGBA") else tif)
    return (png if mode in ("RGB", "RGBA") else tif), rgb / 255.0


def _box_reduce(arr: np.ndarray, f: int) -> np.ndarray:
    h, w, c = arr.shape
    return arr.reshape(h // f, f, w // f, f, c).mean((1, 3))


MODES = ["1", "P", "PA", "L", "LA", "I", "I;16", "F", "RGB", "RGBA", "CMYK", "YCbCr"]


@pytest.mark.parametrize("mode", [*MODES, "cv2-float32", "cv2-uint16"])
@pytest.mark.parametrize("size", [(24, 16), (96, 48)])
def test_every_mode_is_read_below_and_above_the_decode_limit(tmp_path, mode, size):
    """Each mode reads to the source values; above REDUCE_ABOVE × max_size it is box-reduced."""
    max_size = 16
    path, expected = _write_mode(tmp_path / "img", mode, *size)
    arr, got_size = images.read_image(path, max_size=max_size)
    assert got_size == size and arr.dtype == np.float32
    factor = max(size) // max_size if max(size) > images.REDUCE_ABOVE * max_size else 1
    assert factor == (1 if size == (24, 16) else 6)
    if factor > 1:
        expected = _box_reduce(expected, factor)
    assert arr.shape == expected.shape
    # 8-bit reduce rounds to 1/255; YCbCr round-trips through 8-bit chroma
    atol = {"YCbCr": 4 / 255}.get(mode, 1.01 / 255 if factor > 1 else 1e-6)
    np.testing.assert_allclose(arr, expected, atol=atol, rtol=0)


def test_undecodable_tiff_names_its_format(tmp_path):
    """A TIFF neither PIL nor OpenCV can decode is described, not called 'not an image'."""
    path = tmp_path / "zstd.tif"
    assert cv2.imwrite(str(path), np.zeros((8, 8, 3), np.float32))
    data = bytearray(path.read_bytes())
    ifd = int.from_bytes(data[4:8], "little")
    for i in range(int.from_bytes(data[ifd : ifd + 2], "little")):
        entry = ifd + 2 + 12 * i
        if int.from_bytes(data[entry : entry + 2], "little") == 259:  # Compression
            data[entry + 8 : entry + 10] = (50000).to_bytes(2, "little")  # ZSTD, not built in
    path.write_bytes(bytes(data))
    with pytest.raises(ImageError) as e:
        images.read_image(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: TIFF with 3 float32 channels (ZSTD)") and "\n" not in msg
