"""The CLI writes readable matches and pictures, and prints one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

from tiepoint import Matcher, MatchResult
from tiepoint.cli import main

REPO = Path(__file__).resolve().parents[1]
PAIR = REPO / "examples" / "pair"


def test_match_writes_h5_and_pictures(tmp_path, capsys):
    assert (
        main(
            [
                "match",
                str(PAIR / "box.png"),
                str(PAIR / "box_in_scene.png"),
                "--pipeline",
                "sift+nn",
                "--out",
                str(tmp_path),
            ]
        )
        == 0
    )
    line = capsys.readouterr().out.strip()
    assert "matches" in line and "\n" not in line
    # the documented layout (docs/formats.md), read with plain h5py
    with h5py.File(tmp_path / "box_box_in_scene_matches.h5") as f:
        assert f.attrs["tiepoint_format"] == "matches" and f.attrs["tiepoint_format_version"] == 1
        assert f.attrs["pipeline"] == "sift+nn"
        kp0, kp1, m0 = f["keypoints0"][()], f["keypoints1"][()], f["matches0"][()]
        assert kp0.dtype == kp1.dtype == np.float32 and kp0.shape[1] == kp1.shape[1] == 2
        assert m0.dtype == np.int32 and m0.shape == (len(kp0),)
        assert f["matching_scores0"].shape == (len(kp0),)
        assert (m0 > -1).sum() > 20 and m0.max() < len(kp1)
        np.testing.assert_array_equal(f["image_size0"][()], [324, 223])  # box.png is 324×223
        stored = MatchResult.from_h5(f)
    # ... and read back equal to what the API returns for the same pair (SIFT is deterministic)
    r = Matcher("sift+nn", device="cpu").match(PAIR / "box.png", PAIR / "box_in_scene.png")
    for k in ("keypoints0", "keypoints1", "matches", "scores"):
        np.testing.assert_array_equal(getattr(stored, k), getattr(r, k), err_msg=k)
    assert (stored.image_size0, stored.image_size1) == (r.image_size0, r.image_size1)
    assert set(stored.timings) == {"extract", "match"}
    for name in ["match", "warp"]:
        img = np.asarray(Image.open(tmp_path / f"box_box_in_scene_{name}.png"))
        assert (
            img.ndim == 3 and min(img.shape[:2]) > 100 and img.std() > 10
        )  # a real picture, not blank
    assert not list(tmp_path.glob(".*"))  # no temporary files left


def test_errors_are_one_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "tiepoint.cli",
        "match",
        str(tmp_path / "nope.png"),
        str(PAIR / "box.png"),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert (
        p.returncode == 2
        and p.stderr.strip().count("\n") == 0
        and "nope.png: no such file" in p.stderr
    )
    cmd = [
        sys.executable,
        "-m",
        "tiepoint.cli",
        "match",
        str(PAIR / "box.png"),
        str(PAIR / "box.png"),
        "--pipeline",
        "foo+bar",
    ]
    p = subprocess.run(cmd, capture_output=True, text=True)
    assert p.returncode == 2 and "Traceback" not in p.stderr and "valid:" in p.stderr


def test_models_lists_pipelines(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "aliked+lightglue" in out and "sift+nn" in out and "no weights needed" in out


def test_dotted_overrides_may_follow_options(tmp_path):
    def n_matches(*extra):
        out = tmp_path / str(len(extra))
        assert (
            main(
                [
                    "match",
                    str(PAIR / "box.png"),
                    str(PAIR / "box_in_scene.png"),
                    "--pipeline",
                    "sift+nn",
                    "--out",
                    str(out),
                    *extra,
                ]
            )
            == 0
        )
        with h5py.File(out / "box_box_in_scene_matches.h5") as f:
            return int((f["matches0"][()] > -1).sum())

    assert n_matches("matcher.ratio_thresh=0.6") < n_matches()
