"""Lines in the match picture: matched pairs share a colour, unmatched lines are pale blue;
`tiepoint match` on a line pipeline stores the lines and draws them."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from tiepoint.cli import main
from tiepoint.viz.lines import UNMATCHED_COLOR, match_colors
from tiepoint.viz.matches import plot_matches

REPO = Path(__file__).resolve().parents[2]
PAIR = REPO / "examples" / "pair"


def _rgb(fig) -> np.ndarray:
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].astype(int)


def test_matched_lines_share_a_colour():
    img = np.zeros((100, 120, 3), np.float32)
    l0 = np.array([[[10, 20], [110, 20]], [[10, 60], [110, 60]], [[60, 70], [60, 95]]], float)
    l1 = np.array([[[10, 80], [110, 80]], [[10, 40], [110, 40]]], float)
    # l0[0] ↔ l1[1], l0[1] ↔ l1[0]; l0[2] unmatched
    fig = plot_matches(
        img,
        img,
        np.zeros((0, 2)),
        np.zeros((0, 2)),
        lines0=l0,
        lines1=l1,
        line_matches=np.array([[0, 1], [1, 0]]),
    )
    rgb = _rgb(fig)
    h, w = rgb.shape[:2]
    sx, sy = w / (120 * 2 + 10), h / 100  # canvas pixels per image pixel
    at = lambda x, y: rgb[int(round(y * sy)), int(round(x * sx))]
    c = (match_colors(2)[:, :3] * 255).round()
    np.testing.assert_allclose(at(60, 20), c[0], atol=40)
    np.testing.assert_allclose(at(130 + 60, 40), c[0], atol=40)  # its partner, same colour
    np.testing.assert_allclose(at(60, 60), c[1], atol=40)
    np.testing.assert_allclose(at(130 + 60, 80), c[1], atol=40)
    assert np.abs(c[0] - c[1]).max() > 80  # the two pairs are told apart
    pale = at(60, 85)
    assert pale[2] > pale[0] and pale.max() > 60  # unmatched: blueish, visible on black
    assert (
        np.abs(pale - np.array(UNMATCHED_COLOR[:3]) * 255).max() > 0
    )  # alpha-blended, not a match colour
    assert at(60, 5).max() < 20  # where no line is, the image stays black


def test_cli_match_with_lines(tmp_path):
    args = [
        "match",
        str(PAIR / "box.png"),
        str(PAIR / "box_in_scene.png"),
        "--pipeline",
        "sift+nn",
        "--out",
        str(tmp_path),
        "extractor.name=sift+lsd",
    ]
    assert main(args) == 0
    with h5py.File(tmp_path / "box_box_in_scene_matches.h5") as f:
        l0, l1 = f["lines0"][()], f["lines1"][()]
    assert l0.ndim == 3 and l0.shape[1:] == (2, 2) and len(l0) > 10 and len(l1) > 10
    assert (l0[..., 0] <= 324).all() and (l0[..., 1] <= 223).all()  # box.png pixels
    assert (tmp_path / "box_box_in_scene_match.png").stat().st_size > 1000
