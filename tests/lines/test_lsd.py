"""LSD extractor: segments where the drawing has edges, nothing where it has none, and lines
through the public API in original-image pixels."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from tiepoint.api import Matcher
from tiepoint.errors import ConfigError
from tiepoint.models import get_model
from tiepoint.types import Features, MatchResult

# a bright rectangle: edges x = 59.5 and 179.5 (between columns), y = 39.5 and 119.5
W, H = 240, 160
X0, X1, Y0, Y1 = 60, 180, 40, 120


def rectangle() -> np.ndarray:
    img = np.full((H, W), 40, np.uint8)
    img[Y0:Y1, X0:X1] = 210
    return img


def as_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).float()[None, None] / 255


def _edge_of(seg):
    """Which rectangle side a segment lies on, with its distance to that side."""
    (xa, ya), (xb, yb) = seg
    if abs(xa - xb) < abs(ya - yb):  # vertical
        x = (xa + xb) / 2
        side = min((abs(x - (X0 - 0.5)), "left"), (abs(x - (X1 - 0.5)), "right"))
    else:
        y = (ya + yb) / 2
        side = min((abs(y - (Y0 - 0.5)), "top"), (abs(y - (Y1 - 0.5)), "bottom"))
    return side[1], side[0]


def test_rectangle_gives_its_four_sides():
    lsd = get_model("extractor", {"name": "lsd"})
    pred = lsd({"image": as_tensor(rectangle())})
    lines, scores = pred["lines"][0].numpy(), pred["line_scores"][0].numpy()
    assert pred["keypoints"].shape == (1, 0, 2) and pred["valid_lines"].all()
    sides = {}
    for seg in lines:
        side, d = _edge_of(seg)
        assert d < 1.0  # on the edge, in tiepoint's pixel convention (centres at integers)
        sides[side] = max(sides.get(side, 0), np.linalg.norm(seg[1] - seg[0]))
    assert set(sides) == {"left", "right", "top", "bottom"}
    assert sides["top"] > 0.9 * (X1 - X0) and sides["left"] > 0.9 * (Y1 - Y0)
    assert (np.diff(scores) <= 0).all()  # best first


def test_no_structure_and_length_filter_and_budget():
    lsd = get_model("extractor", {"name": "lsd"})
    flat = lsd({"image": torch.full((2, 1, 64, 80), 0.5)})
    assert flat["lines"].shape == (2, 0, 2, 2) and flat["line_scores"].shape == (2, 0)
    rng = np.random.default_rng(0)
    noise = (rng.random((H, W)) * 255).astype(np.uint8)  # no straight structure worth 15 px
    pred = lsd({"image": as_tensor(noise)})
    length = np.linalg.norm(np.diff(pred["lines"][0].numpy(), axis=1)[:, 0], axis=-1)
    assert (length >= 15).all()
    few = get_model("extractor", {"name": "lsd", "max_num_lines": 2, "min_length": 100})
    lines = few({"image": as_tensor(rectangle())})["lines"][0].numpy()
    assert len(lines) == 2 and (np.linalg.norm(lines[:, 1] - lines[:, 0], axis=-1) >= 100).all()
    with pytest.raises(ConfigError, match="refine"):
        get_model("extractor", {"name": "lsd", "refine": "best"})


def test_points_and_lines_batch_pads_with_invalid_lines():
    ex = get_model("extractor", {"name": "sift+lsd", "max_num_keypoints": 64})
    batch = torch.cat([as_tensor(rectangle()), torch.full((1, 1, H, W), 0.5)])
    pred = ex({"image": batch})
    assert {"keypoints", "descriptors", "lines", "line_scores", "valid_lines"} <= set(pred)
    n = pred["lines"].shape[1]
    assert n >= 4 and pred["valid_lines"][0].all() and not pred["valid_lines"][1].any()
    assert (pred["line_scores"][1] == 0).all()


def test_lines_through_matcher_in_original_pixels_and_h5(tmp_path):
    path = tmp_path / "rect.png"
    Image.fromarray(rectangle()).save(path)
    m = Matcher(
        {"extractor": {"name": "sift+lsd"}, "matcher": {"name": "nearest_neighbor"}},
        device="cpu",
    )
    f = m.extract(path, resize=120)  # half size: lines must come back in full-size pixels
    assert f.lines is not None and len(f.lines) >= 4
    assert all(_edge_of(s)[1] < 1.5 for s in f.lines)
    r = m.match(path, path, resize=0)
    assert r.lines0.shape == r.lines1.shape and r.line_matches is None  # NN matches no lines
    with h5py.File(tmp_path / "f.h5", "w") as h:
        f.to_h5(h.create_group("a"))
        r.to_h5(h.create_group("m"))
    with h5py.File(tmp_path / "f.h5", "r") as h:
        g = Features.from_h5(h["a"])
        q = MatchResult.from_h5(h["m"])
    np.testing.assert_array_equal(g.lines, f.lines)
    np.testing.assert_array_equal(g.line_scores, f.line_scores)
    np.testing.assert_array_equal(q.lines0, r.lines0)
