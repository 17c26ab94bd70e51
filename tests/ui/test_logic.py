"""The page's logic without a browser: path checks, upload limits, messages, the match cache and
estimator switch, and the inspector's reading of `tiepoint eval` files."""

from __future__ import annotations

import json
import os
import re

import h5py
import numpy as np
import pytest
from PIL import Image

import tiepoint
from tiepoint.errors import DatasetError
from tiepoint.evaluation.metrics import error_auc
from tiepoint.types import MatchResult
from tiepoint.ui.app import EXAMPLE, App
from tiepoint.ui.inspector import ResultsFolder
from tiepoint.ui.paths import PathRefused, ServerPaths, check_upload
from tiepoint.ui.render import svg_scatter
from tiepoint.ui.session import geometry_models

PAIR = ("bundled example", None, None, "", "")


def match_args(pipeline="sift+nn", estimator="opencv", threshold=None, resize=512):
    return (pipeline, resize, None, None, "homography", estimator, threshold, "", "")


def cell(html: str, key: str) -> str:
    return re.search(rf'data-k="{key}">([^<]*)<', html).group(1)


def test_server_paths_refuse_traversal_and_symlinks_out(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (64, 64)).save(allowed / "sub" / "a.png")
    Image.new("RGB", (64, 64)).save(outside / "secret.png")
    (allowed / "link_out.png").symlink_to(outside / "secret.png")
    (allowed / "dir_out").symlink_to(outside)
    (allowed / "link_in.png").symlink_to(allowed / "sub" / "a.png")
    paths = ServerPaths([allowed])
    assert paths.resolve("sub/a.png") == (allowed / "sub" / "a.png").resolve()
    assert paths.resolve(str(allowed / "sub" / "a.png")) == (allowed / "sub" / "a.png").resolve()
    assert paths.resolve("link_in.png") == (allowed / "sub" / "a.png").resolve()
    for bad, why in [
        ("../outside/secret.png", "'..'"),
        ("sub/../../outside/secret.png", "'..'"),
        (str(outside / "secret.png"), "outside the allowed folders"),
        (str(outside / "missing.png"), "outside the allowed folders"),
        ("sub/missing.png", "no such file under the allowed"),
        ("link_out.png", "outside the allowed folders"),
        ("dir_out/secret.png", "outside the allowed folders"),
        ("/etc/passwd", "outside the allowed folders"),
    ]:
        with pytest.raises(PathRefused, match=why):
            paths.resolve(bad)
    with pytest.raises(PathRefused, match="server paths are off"):
        ServerPaths([]).resolve("sub/a.png")
    # through the page: a message, no file read
    msg = App(allow=[allowed]).match(
        "server path", None, None, "link_out.png", "sub/a.png", *match_args()
    )[0]
    assert msg.startswith("⚠️") and "outside the allowed folders" in msg


def test_oversized_upload_refused(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + os.urandom(int(1.5 * 2**20)))
    with pytest.raises(PathRefused, match=r"1\.5 MB refused \(limit 1 MB\)"):
        check_upload(big, max_mb=1)
    assert check_upload(big, max_mb=2) == big
    app = App(max_mb=1)
    msg = app.match("upload", str(big), str(EXAMPLE / "box.png"), "", "", *match_args())[0]
    assert "refused (limit 1 MB)" in msg
    assert app.session.runs == 0


def test_clear_messages_for_bad_inputs(tmp_path, monkeypatch):
    corrupt, tiny = tmp_path / "corrupt.png", tmp_path / "tiny.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 50)
    Image.new("RGB", (20, 300)).save(tiny)
    app = App()
    ok = str(EXAMPLE / "box.png")
    msg = app.match("upload", str(corrupt), ok, "", "", *match_args())[0]
    assert msg.startswith("⚠️ image A:") and "\n" not in msg, msg
    msg = app.match("upload", ok, str(tiny), "", "", *match_args())[0]
    assert msg == "⚠️ image B: image of 20×300 pixels is too small (at least 32 pixels on each side)"
    # a pipeline whose weights are missing: one line naming them and how to get them
    from tiepoint import weights

    monkeypatch.setattr(weights, "is_cached", lambda name: False)
    msg = app.match(*PAIR, *match_args("aliked+lightglue"))[0]
    assert msg.startswith(
        "⚠️ aliked+lightglue: weights aliked-n16, aliked_lightglue not in the cache"
    )
    assert "tiepoint weights fetch aliked-n16 aliked_lightglue" in msg and "\n" not in msg
    assert app.session.runs == 0
    assert "no results folder" in app.inspector_show("pairs", ["a", "b"])[0]


def test_numbers_equal_tiepoint_match_and_estimator_switch_does_not_rematch(monkeypatch):
    img0, img1 = EXAMPLE / "box.png", EXAMPLE / "box_in_scene.png"
    truth = tiepoint.match(img0, img1, pipeline="sift+nn", resize=512)
    H_cv, inl_cv = truth.homography(estimator="opencv")
    _, inl_pl = truth.homography(estimator="poselib", threshold=1.0)
    assert inl_cv.sum() != inl_pl.sum()  # the switch must show in the numbers

    calls = []
    original = tiepoint.Matcher.match
    monkeypatch.setattr(
        tiepoint.Matcher, "match", lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    )
    app = App()
    msg, counts, *pictures, downloads = app.match(*PAIR, *match_args())
    assert "matched; pipeline runs so far: 1" in msg
    assert int(cell(counts, "keypoints0")) == len(truth.keypoints0)
    assert int(cell(counts, "keypoints1")) == len(truth.keypoints1)
    assert int(cell(counts, "matches")) == len(truth)
    assert int(cell(counts, "inliers")) == inl_cv.sum()
    assert all(os.path.getsize(p) > 1000 for p in pictures)
    with h5py.File(downloads[0], "r") as f:
        saved = MatchResult.from_h5(f)
    np.testing.assert_array_equal(saved.points0, truth.points0)  # keypoint order kept by matches0

    msg, counts, *_ = app.match(*PAIR, *match_args(estimator="poselib", threshold=1.0))
    assert "from cache, not re-matched; pipeline runs so far: 1" in msg
    assert int(cell(counts, "inliers")) == inl_pl.sum()
    assert cell(counts, "cached") == "True"
    assert len(calls) == 1 and app.session.runs == 1
    # essential matrix with given intrinsics, still on the cached matches
    K0, K1 = (
        np.array([[500, 0, 162], [0, 500, 112], [0, 0, 1.0]]),
        np.array([[500, 0, 256], [0, 500, 192], [0, 0, 1.0]]),
    )
    args = ("sift+nn", 512, None, None, "essential", "opencv", None)
    msg, counts, *_ = app.match(*PAIR, *args, "500 500 162 112", "500,500,256,192")
    assert int(cell(counts, "inliers")) == truth.relative_pose(K0, K1)[2].sum()
    assert "intrinsics of B" in app.match(*PAIR, *args, "500 500 162 112", "500 500")[0]
    # the fundamental matrix is offered exactly when MatchResult can estimate it
    if "fundamental" not in geometry_models():
        half = lambda self, estimator="opencv", threshold=None: (
            np.eye(3),
            np.arange(len(self)) % 2 == 0,
        )
        monkeypatch.setattr(MatchResult, "fundamental", half, raising=False)
        assert "fundamental" in geometry_models()
        msg, counts, *_ = app.match(
            *PAIR, "sift+nn", 512, None, None, "fundamental", "opencv", None, "", ""
        )
        assert int(cell(counts, "inliers")) == (len(truth) + 1) // 2
    assert len(calls) == 1 and app.session.runs == 1
    # another knob is another entry: matched again
    app.session.match(img0, img1, "sift+nn", app.knobs(400, None, None))
    assert len(calls) == 2


def test_inspector_reads_what_eval_wrote(eval_results, tmp_path):
    folder = ResultsFolder(eval_results)
    assert folder.benchmarks() == ["pairs"]
    assert folder.tags("pairs") == ["sift2k", "sift512"]
    assert folder.tasks("pairs", ["sift2k", "sift512"]) == ["homography"]
    names, a, b, key, cap = folder.scatter("pairs", "sift2k", "sift512", "homography")
    assert len(names) == 2 and key == "H_error_ransac" and cap == 10.0
    for tag, errs in (("sift2k", a), ("sift512", b)):
        summ = json.loads((eval_results / "pairs" / tag / "summaries.json").read_text())
        assert error_auc(errs, (3, 5, 10))[0] == pytest.approx(summ["H_error_ransac@3px"], abs=1e-4)
        r = folder.pair_result("pairs", tag, names[0])
        row = folder.pair_row("pairs", tag, "homography", names[0])
        assert row["num_matches"] == len(r)
    im0, im1 = folder.pair_images("pairs", "sift2k", names[0])
    assert im0.name == "img1.png" and im1.is_file()
    table = folder.compare("pairs", ["sift2k", "sift512"], tmp_path / "c.png")
    assert "sift2k" in table and (tmp_path / "c.png").stat().st_size > 1000
    assert not list(eval_results.glob("pairs/compare_*"))  # nothing written into the results
    app = App(results=eval_results)
    msg, pair_rows, pics = app.inspector_pair("pairs", ["sift2k", "sift512"], names[0])
    assert pair_rows.count("<tr data-row=") == 2 and len(pics) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match="holds no benchmark runs"):
        ResultsFolder(empty).benchmarks()
    assert "holds no benchmark runs" in App(results=empty).inspector_benchmarks()[1]


def test_svg_scatter_points_carry_pair_and_values():
    svg = svg_scatter(
        ['a "x" <1>', "b"], np.array([1.0, np.inf]), np.array([2.0, 0.5]), "A err", "B err", cap=10
    )
    assert svg.count("<circle") == 2
    assert 'data-pair="a &quot;x&quot; &lt;1&gt;"' in svg
    # inf (a failure) sits on the border; values are placed on the 0..cap axes
    assert 'cx="372.0"' in svg and 'cx="80.4"' in svg
