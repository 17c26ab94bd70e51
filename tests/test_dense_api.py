"""The dense API path end to end against a ground-truth homography, through an oracle model
(tests/dense_oracle.py) that outputs the exact warp of the homography: sampling, coordinate
conversion, results, h5, weights, the CLI pictures, and what dense pipelines refuse."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from dense_oracle import oracle_pipeline
from helpers import read_h
from PIL import Image

import tiepoint
from tiepoint.api import pipeline_conf, pipeline_weights
from tiepoint.cli import main
from tiepoint.errors import ConfigError, WeightsError
from tiepoint.geometry.homography import homography_corner_error, warp_points
from tiepoint.types import MatchResult
from tiepoint.viz.certainty import warp_to_image0
from tiepoint.viz.warp import warp_to_reference

SIZE = (850, 680)  # the Oxford boat images, (W, H)


@pytest.fixture(scope="module")
def boat(data_dir):
    seq = data_dir / "homography" / "oxford_boat"
    H = read_h(seq / "H1to2p")
    return seq / "img1.png", seq / "img2.png", H


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("resize", [None, 600])  # the load size must not matter
def test_sampled_points_obey_the_ground_truth_homography(boat, symmetric, resize):
    im0, im1, H = boat
    pipe = oracle_pipeline(H, SIZE, SIZE, symmetric=symmetric, num_matches=800)
    m = tiepoint.Matcher(pipe, device="cpu")
    r = m.match(im0, im1, resize=resize)
    assert len(r) == 800 and r.scores.min() == 1.0  # certainty 1 wherever the match is inside
    np.testing.assert_array_equal(r.matches, np.stack([np.arange(800)] * 2, -1))
    assert (r.image_size0, r.image_size1) == (SIZE, SIZE)
    # image 0 → image 1 by the GT homography, in pixels of the original images
    err = np.linalg.norm(warp_points(H, r.points0.astype(np.float64)) - r.points1, axis=-1)
    assert err.max() < 0.01, err.max()
    # points of image 0 on its 80-wide grid's cell centres: all of them one way; symmetric, the
    # half sampled from image 1's grid lands off it
    on_grid0 = np.isclose((r.points0[:, 0] + 0.5) * 80 / SIZE[0] % 1, 0.5, atol=1e-3)
    assert 0.2 < on_grid0.mean() < 0.8 if symmetric else on_grid0.all()
    H_est, inliers = r.homography()
    assert inliers.mean() > 0.99
    assert homography_corner_error(H_est, H, SIZE) < 1.0
    loaded = max(s[-1] for s in m.dense.inputs)
    assert loaded == (SIZE[0] if resize is None else resize)  # images shrunk only above the cap


def test_dense_result_and_h5_round_trip(boat, tmp_path):
    im0, im1, H = boat
    r = tiepoint.match(im0, im1, pipeline=oracle_pipeline(H, SIZE, SIZE, num_matches=300))
    assert r.dense.warp.shape == (60, 160, 4) and r.dense.certainty.shape == (60, 160)
    assert r.dense.symmetric and r.dense.warp.dtype == np.float32
    with h5py.File(tmp_path / "r.h5", "w") as f:
        r.to_h5(f)
    with h5py.File(tmp_path / "r.h5", "r") as f:
        back = MatchResult.from_h5(f)
    np.testing.assert_array_equal(back.dense.warp, r.dense.warp)
    np.testing.assert_array_equal(back.dense.certainty, r.dense.certainty)
    np.testing.assert_array_equal(back.points0, r.points0)
    np.testing.assert_array_equal(back.points1, r.points1)


def test_the_same_pair_gives_the_same_matches(boat):
    im0, im1, H = boat
    m = tiepoint.Matcher(oracle_pipeline(H, SIZE, SIZE, num_matches=200), device="cpu")
    a, b = m.match(im0, im1), m.match(im0, im1)
    np.testing.assert_array_equal(a.keypoints0, b.keypoints0)


def test_weights_load_into_the_dense_model(boat, tmp_path):
    im0, im1, H = boat
    torch.save({"gain": torch.zeros(1)}, tmp_path / "zero.pth")  # certainty × 0 everywhere
    pipe = oracle_pipeline(H, SIZE, SIZE, num_matches=200)
    r = tiepoint.Matcher(pipe, device="cpu", weights=tmp_path / "zero.pth").match(im0, im1)
    assert len(r) == 0 and r.keypoints0.shape == (0, 2) and r.dense.certainty.max() == 0
    torch.save({"other": torch.zeros(1)}, tmp_path / "bad.pth")
    with pytest.raises(WeightsError, match="bad.pth: weights do not fit this HomographyOracle"):
        tiepoint.Matcher(pipe, device="cpu", weights=tmp_path / "bad.pth")


def test_dense_pipelines_refuse_feature_calls_and_mixed_configs(boat):
    _, _, H = boat
    m = tiepoint.Matcher(oracle_pipeline(H, SIZE, SIZE), device="cpu")
    with pytest.raises(ConfigError, match="dense pipelines match images, not features"):
        m.extract(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ConfigError, match="dense pipelines match images, not features"):
        m.match_features(None, None)
    with pytest.raises(ConfigError, match="either extractor \\+ matcher or dense"):
        pipeline_conf("dkm", ["matcher.name=lightglue"])
    with pytest.raises(ConfigError, match="no dense.name"):
        pipeline_conf({"dense": {"preset": "outdoor"}})


def test_packaged_dense_pipelines_and_their_sparse_neighbours():
    for name, preset in [("dkm", "outdoor"), ("dkm_indoor", "indoor"), ("gim_dkm", "gim")]:
        conf = pipeline_conf(name)
        assert conf.dense.name == "dkm" and conf.dense.preset == preset
        assert "extractor" not in conf and "matcher" not in conf
    assert "dense" not in pipeline_conf("sift+nn")  # sparse configs are unchanged
    assert pipeline_weights({"dense": {"name": "dense_oracle:HomographyOracle"}}) == []
    conf = {"dense": {"name": "dense_oracle:HomographyOracle", "weights": "w.pth"}}
    assert pipeline_weights(conf) == ["w.pth"]


def test_the_certainty_picture_warps_image1_like_the_homography(boat):
    im0, im1, H = boat
    img1 = np.asarray(Image.open(im1).convert("RGB"), np.float32) / 255
    r = tiepoint.match(im0, im1, pipeline=oracle_pipeline(H, SIZE, SIZE, grid=[140, 200]))
    warped, cert = warp_to_image0(img1, r.dense, SIZE)
    truth = warp_to_reference(img1, H, SIZE)
    inner = cert > 0.999
    assert warped.shape == (680, 850, 3) and 0.5 < inner.mean() < 1
    # the same picture up to the warp's linear interpolation between grid cells
    assert np.abs(warped - truth)[inner].mean() < 0.02


def test_cli_writes_the_dense_pictures_and_h5(boat, tmp_path, capsys):
    im0, im1, H = boat
    pipe = tmp_path / "oracle.yaml"
    conf = oracle_pipeline(H, SIZE, SIZE, num_matches=300)["dense"]
    pipe.write_text("dense: " + repr(conf).replace("'", '"') + "\n")
    args = ["match", str(im0), str(im1), "--pipeline", str(pipe), "--out", str(tmp_path)]
    assert main(args) == 0
    assert "300 matches" in capsys.readouterr().out
    for name in ["match", "warp", "certainty"]:
        img = np.asarray(Image.open(tmp_path / f"img1_img2_{name}.png"))
        assert img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 10, name
    with h5py.File(tmp_path / "img1_img2_matches.h5") as f:
        assert f["dense/warp"].shape == (60, 160, 4)
        assert f["dense"].attrs["tiepoint_format"] == "dense"


def test_models_lists_the_dense_pipelines(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("dkm", "dkm_indoor", "gim_dkm"):
        assert any(line.split()[0] == name for line in out.splitlines()), name
