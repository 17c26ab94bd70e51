"""Tiled extraction (docs/large_images.md): windows and cores, exactness for a pointwise
extractor, and closeness to whole-image ALIKED on a real photo."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from tiepoint.api import Matcher
from tiepoint.errors import ConfigError
from tiepoint.tiling import TILE_ALIGN, _cores, extract_tiled, tile_windows


@pytest.mark.parametrize(
    ("length", "tile", "overlap"), [(100, 256, 64), (1000, 512, 64), (5000, 1024, 128)]
)
def test_windows_cover_overlap_and_cores_partition(length, tile, overlap):
    win = tile_windows(length, tile, overlap)
    assert win[0][0] == 0 and win[-1][1] == length
    assert all(s % TILE_ALIGN == 0 for s, _ in win)
    for (_, e0), (s1, _) in zip(win, win[1:], strict=False):
        assert e0 - s1 >= overlap  # consecutive windows overlap by at least `overlap`
    cores = _cores(win)
    x = np.linspace(-0.5, length - 0.5, 4001)
    owners = sum(((x >= lo) & (x < hi)).astype(int) for lo, hi in cores)
    assert (owners == 1).all()  # every position is owned by exactly one window
    for (s, e), (lo, hi) in zip(win, cores, strict=True):  # ≥ overlap/2 from inner borders
        assert lo == -np.inf or lo - s >= overlap / 2 - 1
        assert hi == np.inf or e - hi >= overlap / 2 - 1


def test_tile_not_larger_than_overlap_is_a_config_error():
    with pytest.raises(ConfigError, match="tile"):
        tile_windows(1000, 128, 128)


class BrightPixels(torch.nn.Module):
    """A pointwise extractor: every pixel brighter than 0.9 is a keypoint scored by its value."""

    conf = {"max_num_keypoints": 300, "nms_radius": 0}

    def forward(self, data):
        img = data["image"][0, 0]
        y, x = torch.nonzero(img > 0.9, as_tuple=True)
        s = img[y, x]
        order = torch.argsort(s, descending=True)[: self.conf["max_num_keypoints"]]
        kp = torch.stack([x, y], -1).float()[order]
        return {
            "keypoints": kp[None],
            "keypoint_scores": s[order][None],
            "descriptors": torch.stack([s, -s], -1)[order][None],
        }


def test_tiling_is_exact_for_a_pointwise_extractor():
    """No keypoint lost or duplicated at the seams, and the global top-k is the whole image's."""
    rng = np.random.default_rng(0)
    img = torch.from_numpy(rng.uniform(0, 1, (1, 1, 700, 1000)).astype(np.float32))
    ext = BrightPixels()
    whole = ext({"image": img})
    tiled = extract_tiled(ext, img, tile=256, overlap=64)
    a = whole["keypoints"][0].numpy()
    b = tiled["keypoints"][0].numpy()
    assert len(b) == 300 and len(np.unique(b, axis=0)) == 300
    assert {tuple(p) for p in a} == {tuple(p) for p in b}
    value = img[0, 0].numpy()[b[:, 1].astype(int), b[:, 0].astype(int)]
    np.testing.assert_array_equal(tiled["descriptors"][0, :, 0].numpy(), value)  # rows aligned


def test_tiled_aliked_is_nearly_whole_image_aliked(data_dir, official_weights):
    """ALIKED's receptive field spans hundreds of pixels, so tiles change scores slightly: most
    keypoints (≥ 85%) coincide within 1 px, and no seam makes near-duplicates."""
    official_weights("aliked-n16")
    img = str(data_dir / "homography" / "oxford_bikes" / "img1.png")
    plain = Matcher("aliked+lightglue", resize=640, device="cpu").extract(img)
    m = Matcher("aliked+lightglue", resize=640, device="cpu", overrides=["extractor.tile=320"])
    tiled = m.extract(img)
    assert abs(len(tiled) - len(plain)) <= 0.05 * len(plain)  # ~800 above the threshold
    d, _ = cKDTree(tiled.keypoints).query(plain.keypoints)
    assert (d < 1).mean() >= 0.85
    close = lambda k: len(cKDTree(k).query_pairs(1.0))
    assert close(tiled.keypoints) <= close(plain.keypoints)
