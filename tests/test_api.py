"""tiepoint.match / Matcher end to end against ground-truth homographies, and degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import read_h

import tiepoint
from tiepoint.errors import ConfigError, ImageError
from tiepoint.geometry.homography import homography_corner_error


def test_sift_nn_recovers_the_oxford_homography(data_dir):
    seq = data_dir / "homography" / "oxford_bikes"
    r = tiepoint.match(seq / "img1.png", seq / "img2.png", pipeline="sift+nn", resize=None)
    assert r.matches.dtype == np.int64 and r.matches.shape[1] == 2 and len(r) == len(r.scores) > 100
    H, inliers = r.homography()
    assert inliers.shape == (len(r),) and inliers.sum() > 50
    assert homography_corner_error(H, read_h(seq / "H1to2p"), (1000, 700)) < 2.0
    # keypoints are in original pixels whatever the working resolution
    r2 = tiepoint.match(seq / "img1.png", seq / "img2.png", pipeline="sift+nn", resize=700)
    H2, _ = r2.homography()
    assert homography_corner_error(H2, read_h(seq / "H1to2p"), (1000, 700)) < 3.0
    assert r2.keypoints0[:, 0].max() > 900


def test_textureless_image_gives_zero_matches():
    flat = np.full((240, 320, 3), 128, np.uint8)
    r = tiepoint.match(flat, flat, pipeline="sift+nn")
    assert len(r.keypoints0) == 0 and len(r) == 0 and r.points0.shape == (0, 2)
    H, inliers = r.homography()
    assert H is None and inliers.shape == (0,)


def test_unknown_pipeline_lists_valid_names():
    with pytest.raises(ConfigError, match="valid: .*aliked\\+lightglue"):
        tiepoint.Matcher("orb+magic")


def test_missing_image_is_an_image_error(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        tiepoint.match(tmp_path / "a.png", tmp_path / "b.png", pipeline="sift+nn")


def test_extract_then_match_equals_match(data_dir):
    seq = data_dir / "homography" / "oxford_leuven"
    m = tiepoint.Matcher("sift+nn", resize=640)
    f0, f1 = m.extract(seq / "img1.png"), m.extract(seq / "img2.png")
    assert f0.image_size == (900, 600) and f0.descriptors.shape == (len(f0), 128)
    a = m.match_features(f0, f1)
    b = m.match(seq / "img1.png", seq / "img2.png")
    np.testing.assert_array_equal(a.matches, b.matches)


def test_training_checkpoint_rebuilds_its_architecture(tmp_path):
    """A checkpoint carries its matcher config: a smaller LightGlue than the preset loads, and the
    preset's official weights (unreachable for SIFT here) are not needed."""
    import torch

    from tiepoint.models.matchers.lightglue import LightGlue

    trained = {
        "name": "lightglue",
        "features": "sift",
        "n_layers": 2,
        "descriptor_dim": 64,
        "num_heads": 2,
        "pretrained": False,
        "depth_confidence": -1,
    }
    lg = LightGlue(trained)
    ckpt = tmp_path / "checkpoint_best.tar"
    torch.save(
        {
            "model": {f"matcher.{k}": v for k, v in lg.state_dict().items()},
            "conf": {"model": {"matcher": trained}},
        },
        ckpt,
    )
    m = tiepoint.Matcher("sift+lightglue", weights=ckpt, resize=320)
    assert (
        m.matcher.conf.n_layers == 2 and m.matcher.conf.depth_confidence == 0.95
    )  # inference keeps the preset's
    for k, v in lg.state_dict().items():
        assert torch.equal(m.matcher.state_dict()[k], v)
    flat = np.random.default_rng(0).integers(0, 255, (240, 320, 3)).astype(np.uint8)
    r = m.match(flat, flat)
    assert len(r.keypoints0) > 0 and r.matches.shape[1] == 2


def test_pretrained_false_gives_random_weights():
    from tiepoint.models.matchers.lightglue import LightGlue

    lg = LightGlue(
        features="sift", pretrained=False
    )  # official sift weights are not reachable: must not be loaded
    assert lg.conf.input_dim == 128 and lg.conf.add_scale_ori
