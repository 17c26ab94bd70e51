"""Homography sampler and the synthetic-pair dataset, checked against independent geometry."""

import logging

import cv2
import numpy as np
import pytest
import torch
from helpers import write_noise_image

from tiepoint.datasets import get_dataset
from tiepoint.datasets.homography_sampler import (
    HomographyConf,
    patch_corners,
    sample_homography,
    warp_image,
)
from tiepoint.errors import ConfigError, DatasetError


def _convex(q):
    e = np.roll(q, -1, 0) - q
    c = e[:, 0] * np.roll(e, -1, 0)[:, 1] - e[:, 1] * np.roll(e, -1, 0)[:, 0]
    return np.all(c > 0) or np.all(c < 0)


@pytest.mark.parametrize("size", [(640, 480), (300, 900), (1000, 1000)])
@pytest.mark.parametrize("difficulty", [0.0, 0.7, 1.0])
def test_sampler_quads_convex_inside_and_mapped(size, difficulty):
    conf = HomographyConf(difficulty=difficulty, max_angle=45, patch_shape=(320, 240))
    rng = np.random.default_rng(0)
    W, H = size
    for _ in range(50):
        Hm, quad = sample_homography(size, conf, rng)
        assert _convex(quad)
        assert (
            quad.min() >= -0.5 - 1e-6
            and (quad[:, 0] <= W - 0.5 + 1e-6).all()
            and (quad[:, 1] <= H - 0.5 + 1e-6).all()
        )
        mapped = cv2.perspectiveTransform(quad[None], Hm)[0]
        assert np.allclose(mapped, patch_corners((320, 240)), atol=1e-3)


def test_warp_follows_pixel_centre_convention():
    # A source image whose channels are its own pixel coordinates: after warping, the value at patch pixel
    # (u, v) must be H^-1(u, v) exactly (bilinear interpolation of a linear ramp is exact).
    W, H = 200, 150
    ys, xs = np.mgrid[0:H, 0:W].astype(np.float32)
    src = np.stack([xs, ys], -1)
    Hm, _ = sample_homography(
        (W, H),
        HomographyConf(difficulty=0.8, max_angle=30, patch_shape=(64, 48)),
        np.random.default_rng(3),
    )
    out = warp_image(src, Hm, (64, 48))
    v, u = np.mgrid[0:48, 0:64].astype(np.float64)
    back = cv2.perspectiveTransform(np.stack([u, v], -1).reshape(1, -1, 2), np.linalg.inv(Hm))[
        0
    ].reshape(48, 64, 2)
    inner = (
        slice(1, -1),
        slice(1, -1),
    )  # the outermost ring may read half a pixel outside the source
    assert np.abs(out[inner] - back[inner]).max() < 0.05


def test_dataset_H_0to1_relates_the_two_views(tmp_path):
    for i in range(3):
        write_noise_image(tmp_path / f"im{i}.png", np.random.default_rng(i), (320, 240), sigma=3)
    ds = get_dataset(
        {
            "name": "homographies",
            "data_dir": str(tmp_path),
            "val_size": 1,
            "train_size": 4,
            "photometric": {"name": "identity"},
            "homography": {"patch_shape": [160, 120], "difficulty": 0.5, "max_angle": 30},
        }
    )
    item = ds.get_dataset("train")[0]
    v0 = item["view0"]["image"].permute(1, 2, 0).numpy()
    v1 = item["view1"]["image"].permute(1, 2, 0).numpy()
    H01 = item["H_0to1"].double().numpy()
    pred1 = warp_image(v0, H01, (160, 120))
    # compare where view 1's pixels come from inside view 0 (away from its border)
    v, u = np.mgrid[0:120, 0:160].astype(np.float64)
    src = cv2.perspectiveTransform(np.stack([u, v], -1).reshape(1, -1, 2), np.linalg.inv(H01))[
        0
    ].reshape(120, 160, 2)
    ok = (src[..., 0] > 2) & (src[..., 0] < 157) & (src[..., 1] > 2) & (src[..., 1] < 117)
    assert ok.sum() > 1000
    err = np.abs(pred1 - v1)[ok].mean()
    wrong = np.abs(warp_image(v0, np.eye(3), (160, 120)) - v1)[ok].mean()
    assert err < 0.02 and wrong > 5 * err


def test_dataset_is_deterministic_per_epoch_and_reseeds(tmp_path):
    for i in range(3):
        write_noise_image(tmp_path / f"im{i}.png", np.random.default_rng(i), (320, 240), sigma=3)
    conf = {
        "name": "homographies",
        "data_dir": str(tmp_path),
        "val_size": 1,
        "train_size": 4,
        "homography": {"patch_shape": [64, 48]},
    }
    a, b = get_dataset(conf).get_dataset("train"), get_dataset(conf).get_dataset("train")
    assert torch.equal(a[2]["H_0to1"], b[2]["H_0to1"])
    assert torch.equal(a[2]["view1"]["image"], b[2]["view1"]["image"])
    b.set_epoch(1)
    assert not torch.equal(a[2]["H_0to1"], b[2]["H_0to1"])
    val = get_dataset(conf).get_dataset("val")
    h = val[0]["H_0to1"]
    val.set_epoch(5)
    assert torch.equal(h, val[0]["H_0to1"])  # validation pairs never change


def test_loader_collates_nested_batches(tmp_path):
    for i in range(4):
        write_noise_image(tmp_path / f"im{i}.png", np.random.default_rng(i), (320, 240), sigma=3)
    ds = get_dataset(
        {
            "name": "homographies",
            "data_dir": str(tmp_path),
            "val_size": 1,
            "train_size": 6,
            "batch_size": 3,
            "homography": {"patch_shape": [64, 48]},
        }
    )
    batches = list(ds.get_data_loader("train"))
    assert len(batches) == 2
    b = batches[0]
    assert b["view0"]["image"].shape == (3, 3, 48, 64) and b["H_0to1"].shape == (3, 3, 3)
    assert isinstance(b["name"], list) and len(b["name"]) == 3


def test_empty_folder_and_corrupt_image(tmp_path, caplog):
    with pytest.raises(DatasetError, match="contains no images"):
        get_dataset({"name": "homographies", "data_dir": str(tmp_path)})
    for i in range(2):
        write_noise_image(tmp_path / f"im{i}.png", np.random.default_rng(i), (320, 240), sigma=3)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    ds = get_dataset(
        {
            "name": "homographies",
            "data_dir": str(tmp_path),
            "val_size": 0,
            "train_size": 6,
            "homography": {"patch_shape": [64, 48]},
        }
    )
    train = ds.get_dataset("train")
    with caplog.at_level(logging.WARNING, logger="tiepoint"):
        items = [train[i] for i in range(6)]
    assert all(not it["name"].startswith("broken") for it in items)
    assert sum("broken.jpg" in r.getMessage() for r in caplog.records) == 1  # logged once


def test_unknown_key_names_closest(tmp_path):
    write_noise_image(tmp_path / "a.png", np.random.default_rng(0), (320, 240), sigma=3)
    with pytest.raises(ConfigError, match="difficulty"):
        get_dataset(
            {"name": "homographies", "data_dir": str(tmp_path), "homography": {"dificulty": 0.5}}
        )
    with pytest.raises(ConfigError, match="homographies"):
        get_dataset({"name": "homografies"})
