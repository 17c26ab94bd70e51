"""Pictures are drawn at display size (docs/large_images.md): the image shrunk, the keypoints and
the homography mapped to it, never a native-resolution canvas."""

from __future__ import annotations

import numpy as np
from PIL import Image

from tiepoint.images import scale_points
from tiepoint.viz.matches import plot_matches, to_display
from tiepoint.viz.warp import _scaled, plot_warp


def test_to_display_scale_maps_points_onto_the_shrunk_image():
    img = np.zeros((3000, 4000, 3), np.float32)
    img[1203:1207, 2901:2905] = 1.0  # a 4×4 bright square centred at (2902.5, 1204.5)
    small, s = to_display(img, max_size=800)
    assert small.shape[:2] == (600, 800)
    y, x = np.unravel_index(np.argmax(small[..., 0]), small.shape[:2])
    q = scale_points(np.array([[2902.5, 1204.5]]), s)[0]
    assert abs(x - q[0]) <= 0.5 and abs(y - q[1]) <= 0.5


def test_scaled_homography_commutes_with_the_point_scaling():
    H = np.array([[1.1, 0.05, 20.0], [-0.03, 0.95, -7.0], [1e-5, 2e-5, 1.0]])
    s0, s1 = np.array([0.25, 0.25]), np.array([0.4, 0.4])
    Hd = _scaled(s1) @ H @ np.linalg.inv(_scaled(s0))
    p = np.array([[100.0, 50.0], [3000.0, 2000.0]])
    w = np.c_[p, np.ones(2)] @ H.T
    expected = scale_points(w[:, :2] / w[:, 2:], s1)
    d = np.c_[scale_points(p, s0), np.ones(2)] @ Hd.T
    np.testing.assert_allclose(d[:, :2] / d[:, 2:], expected, rtol=1e-9)


def test_pictures_of_a_large_pair_are_display_sized(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.uniform(0, 1, (1500, 2000, 3)).astype(np.float32)
    p = rng.uniform(0, 1500, (50, 2))
    plot_matches(img, img, p, p, path=tmp_path / "m.png", max_size=400)
    plot_warp(img, img, np.eye(3), tmp_path / "w.png", max_size=400)
    for name, max_w in (("m.png", 2 * 400 + 10 + 20), ("w.png", 3 * 400 + 20 + 20)):
        w, h = Image.open(tmp_path / name).size
        assert w <= max_w and h <= 400 + 60
