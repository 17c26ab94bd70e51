"""Image loading: every kind of bad or unusual input gets the right result or a one-line ImageError."""

from __future__ import annotations

from pathlib import Path

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
