"""Bad input for line pipelines (`aliked+lsd+gluestick`): images without line structure, degenerate
(zero-length) segments, and GlueStick weights for another descriptor size."""

from __future__ import annotations

import dataclasses

import cv2
import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import tiepoint
from tiepoint.errors import WeightsError

from .test_hpatches_lines import _line_image, write_identity_gluestick

OVERRIDES = [
    "preprocessing.resize=320",
    "extractor.max_num_keypoints=256",
    "extractor.lines.max_num_lines=40",
]


def _dots(w=320, h=240) -> np.ndarray:
    """Small bright dots on a flat background: corners for ALIKED, no segment of 15 px for LSD."""
    rng = np.random.default_rng(0)
    img = np.full((h, w), 90, np.uint8)
    for x, y in rng.uniform([5, 5], [w - 5, h - 5], (150, 2)).astype(int):
        cv2.circle(img, (int(x), int(y)), 2, int(rng.uniform(160, 255)), -1)
    return cv2.GaussianBlur(img, (0, 0), 1.0)


@pytest.fixture
def gs_file(tmp_path, official_weights):
    official_weights("aliked-n16")
    return write_identity_gluestick(tmp_path / "gs_identity.tar")


def _save(tmp_path, name, img):
    Image.fromarray(img).save(tmp_path / name)
    return tmp_path / name


def test_images_without_lines_match_points_and_no_lines(tmp_path, gs_file, capsys):
    from tiepoint.cli import main

    blobs = _save(tmp_path, "dots.png", _dots())
    lines = _save(tmp_path, "lines.png", _line_image(320, 240))
    m = tiepoint.Matcher(
        "aliked+lsd+gluestick", device="cpu", weights=str(gs_file), overrides=OVERRIDES
    )
    r = m.match(blobs, blobs)
    assert r.lines0.shape == (0, 2, 2) and r.lines1.shape == (0, 2, 2)
    assert r.line_matches.shape == (0, 2) and r.line_scores.shape == (0,)
    # the points still match (same image: the identity matcher pairs each keypoint with itself)
    assert len(r.matches) > 20 and (r.matches[:, 0] == r.matches[:, 1]).mean() > 0.9
    r = m.match(lines, blobs)  # lines in one image only
    assert len(r.lines0) > 5 and len(r.lines1) == 0 and r.line_matches.shape == (0, 2)
    argv = ["match", str(blobs), str(blobs), "--pipeline", "aliked+lsd+gluestick"]
    argv += ["--weights", str(gs_file), "--device", "cpu", "--out", str(tmp_path / "o"), *OVERRIDES]
    assert main(argv) == 0
    (h5,) = (tmp_path / "o").glob("*_matches.h5")
    with h5py.File(h5) as f:
        assert tiepoint.MatchResult.from_h5(f).line_matches.shape == (0, 2)


def test_zero_length_segments_never_match(tmp_path, gs_file):
    img = _save(tmp_path, "lines.png", _line_image(320, 240))
    m = tiepoint.Matcher(
        "aliked+lsd+gluestick", device="cpu", weights=str(gs_file), overrides=OVERRIDES
    )
    f = m.extract(img)
    base = m.match_features(f, f).line_matches
    assert len(base) > 5 and (base[:, 0] == base[:, 1]).all()

    # a zero-length copy of each line's first end point, with that end point's descriptor twice:
    # identical in both images, so an unfiltered matcher would pair the copies with each other
    ld = f.extra["line_descriptors"]
    n = len(f.lines)
    deg = np.repeat(f.lines[:, :1], 2, 1)
    g = dataclasses.replace(
        f,
        lines=np.concatenate([f.lines, deg]),
        line_scores=np.concatenate([f.line_scores, f.line_scores]),
        extra={**f.extra, "line_descriptors": np.concatenate([ld, np.repeat(ld[:, :1], 2, 1)])},
    )
    r = m.match_features(g, g)
    assert r.line_matches.max() < n  # no degenerate segment matched or matched to
    assert len(r.line_matches) >= 0.8 * len(base)


def test_gluestick_weights_for_another_descriptor_size(tmp_path, gs_file, capsys):
    from tiepoint.cli import main
    from tiepoint.models.matchers.gluestick import GlueStick

    img = _save(tmp_path, "lines.png", _line_image(160, 120))
    # a plain 64-d state dict into the 128-d pipeline: refused when loading, naming the file
    plain = tmp_path / "gs64_state.pth"
    torch.save(GlueStick({"descriptor_dim": 64, "pretrained": False}).state_dict(), plain)
    with pytest.raises(WeightsError, match=r"gs64_state\.pth: .*64-d descriptors.*128"):
        tiepoint.Matcher("aliked+lsd+gluestick", device="cpu", weights=str(plain))
    # a 64-d training checkpoint brings its architecture; the 128-d features are refused at the
    # first match, naming the file and both sizes
    ckpt = write_identity_gluestick(tmp_path / "gs64_trained.tar", dim=64)
    m = tiepoint.Matcher(
        "aliked+lsd+gluestick", device="cpu", weights=str(ckpt), overrides=OVERRIDES
    )
    with pytest.raises(WeightsError, match=r"gs64_trained\.tar: .*64-d.*128-d"):
        m.match(img, img)
    argv = ["match", str(img), str(img), "--pipeline", "aliked+lsd+gluestick"]
    assert main([*argv, "--weights", str(ckpt), "--device", "cpu", *OVERRIDES]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "gs64_trained.tar" in err[0] and "128-d" in err[0], err
