"""The result types' one h5 form: round trips, the documented layout, growth, old files."""

from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

import tiepoint
from tiepoint.errors import DatasetError
from tiepoint.types import FORMAT_VERSION, DenseResult, Features, MatchResult


def assert_same(a, b):
    """Field-by-field equality of two results (arrays exactly, dicts key by key)."""
    assert type(a) is type(b)
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, dict):
            assert set(x) == set(y), f.name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{f.name}.{k}")
        elif x is None or y is None:
            assert x is None and y is None, f.name
        elif dataclasses.is_dataclass(x):
            assert_same(x, y)
        elif isinstance(x, tuple):
            assert x == y, f.name
        else:
            np.testing.assert_array_equal(x, y, err_msg=f.name)
            assert np.asarray(x).dtype == np.asarray(y).dtype, f.name


def features(n=9, d=16, seed=0, **kw) -> Features:
    rng = np.random.default_rng(seed)
    return Features(
        keypoints=(rng.random((n, 2)) * [640, 480]).astype(np.float32),
        keypoint_scores=rng.random(n).astype(np.float32),
        descriptors=rng.normal(size=(n, d)).astype(np.float32),
        image_size=(640, 480),
        **kw,
    )


def dense_result(h=6, w=8, seed=1) -> DenseResult:
    rng = np.random.default_rng(seed)
    return DenseResult(rng.uniform(-1, 1, (h, w, 4)), rng.random((h, w)))


def result(n0=9, n1=7, k=5, seed=0, **kw) -> MatchResult:
    rng = np.random.default_rng(seed)
    i0 = np.sort(rng.choice(n0, k, replace=False))
    m = np.stack([i0, rng.choice(n1, k, replace=False)], -1).astype(np.int64)
    return MatchResult(
        (rng.random((n0, 2)) * 600).astype(np.float32),
        (rng.random((n1, 2)) * 300).astype(np.float32),
        m,
        rng.random(k).astype(np.float32),
        (640, 480),
        (320, 240),
        **kw,
    )


def roundtrip_h5(obj, tmp_path, key="g", **kw):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        obj.to_h5(f.create_group(key), **kw)
    with h5py.File(tmp_path / "x.h5", "r") as f:
        return type(obj).from_h5(f[key])


def test_public_names_are_the_types():
    assert tiepoint.Features is Features and tiepoint.MatchResult is MatchResult
    assert tiepoint.api.Features is Features  # old import path keeps working


@pytest.mark.parametrize(
    "make",
    [
        lambda: features(),
        lambda: features(0, 128),  # empty
        lambda: features(extra={"scales": np.arange(9, dtype=np.float32), "oris": np.ones(9)}),
        lambda: features(lines=np.arange(12, dtype=np.float32).reshape(3, 2, 2), line_scores=None),
        lambda: features(lines=np.zeros((2, 2, 2), np.float32), line_scores=np.ones(2, np.float32)),
    ],
)
def test_features_round_trip(make, tmp_path):
    f = make()
    back = roundtrip_h5(f, tmp_path)
    if "oris" in f.extra:  # float64 extras are stored as float32 (documented)
        f.extra["oris"] = f.extra["oris"].astype(np.float32)
    assert_same(back, f)


def test_features_layout_is_hlocs(tmp_path):
    f = features(5, 8, extra={"scales": np.full(5, 2.0, np.float32)})
    with h5py.File(tmp_path / "x.h5", "w") as h:
        f.to_h5(h.create_group("a/b.jpg"))
    with h5py.File(tmp_path / "x.h5", "r") as h:
        g = h["a"]["b.jpg"]
        assert sorted(g) == ["descriptors", "image_size", "keypoints", "scales", "scores"]
        assert g["descriptors"].shape == (8, 5) and g["descriptors"].dtype == np.float32
        np.testing.assert_array_equal(g["descriptors"][()], f.descriptors.T)
        np.testing.assert_array_equal(g["scores"][()], f.keypoint_scores)
        np.testing.assert_array_equal(g["image_size"][()], [640, 480])
        assert g.attrs["tiepoint_format"] == "features"
        assert g.attrs["tiepoint_format_version"] == FORMAT_VERSION


def test_features_of_an_hloc_file_without_scores(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as h:
        g = h.create_group("im.jpg")  # as hloc writes it: no tiepoint attrs, fp16 descriptors
        g["keypoints"] = np.array([[1.0, 2.0], [3.0, 4.0]], np.float32)
        g["descriptors"] = np.arange(6, dtype=np.float16).reshape(3, 2)
        g["image_size"] = np.array([10, 20])
    with h5py.File(tmp_path / "x.h5", "r") as h:
        f = Features.from_h5(h["im.jpg"])
    np.testing.assert_array_equal(f.keypoint_scores, [1, 1])
    np.testing.assert_array_equal(f.descriptors, [[0, 2, 4], [1, 3, 5]])
    assert f.descriptors.dtype == np.float32 and f.image_size == (10, 20) and f.extra == {}


@pytest.mark.parametrize(
    "make",
    [
        lambda: result(),
        lambda: result(k=0),  # no matches
        lambda: result(n0=0, n1=0, k=0),  # no keypoints at all
        lambda: result(
            timings={"extract": 0.25, "match": 0.125}, extra={"depth0": np.ones((9,), np.float32)}
        ),
        lambda: result(
            lines0=np.ones((3, 2, 2), np.float32),
            lines1=np.zeros((4, 2, 2), np.float32),
            line_matches=np.array([[0, 1], [2, 3]], np.int64),
            line_scores=np.array([0.5, 0.25], np.float32),
        ),
        lambda: result(dense=dense_result()),
    ],
)
def test_match_result_round_trip(make, tmp_path):
    r = make()
    assert_same(roundtrip_h5(r, tmp_path, key="pairs/a.jpg|b.jpg"), r)


def test_match_layout_is_hlocs_and_only_present_fields_are_written(tmp_path):
    r = result(n0=6, n1=4, k=0)
    r.matches = np.array([[1, 3], [4, 0]])
    r.scores = np.array([0.75, 0.5], np.float32)
    with h5py.File(tmp_path / "x.h5", "w") as h:
        r.to_h5(h)  # a file's root is a group too
    with h5py.File(tmp_path / "x.h5", "r") as h:
        assert sorted(h) == [
            "image_size0",
            "image_size1",
            "keypoints0",
            "keypoints1",
            "matches0",
            "matching_scores0",
        ]
        np.testing.assert_array_equal(h["matches0"][()], [-1, 3, -1, -1, 0, -1])
        np.testing.assert_array_equal(h["matching_scores0"][()], [0, 0.75, 0, 0, 0.5, 0])
        assert h["matches0"].dtype == np.int32 and h["keypoints0"].dtype == np.float32
        assert h.attrs["tiepoint_format"] == "matches"


def test_match_group_without_keypoints_takes_them_from_the_features(tmp_path):
    r = result()
    with h5py.File(tmp_path / "x.h5", "w") as h:
        r.to_h5(h.create_group("a/b"), keypoints=False)
    with h5py.File(tmp_path / "x.h5", "r") as h:
        assert "keypoints0" not in h["a/b"]
        with pytest.raises(DatasetError, match=r"x\.h5:/a/b: no keypoints0 stored or given"):
            MatchResult.from_h5(h["a/b"])
        assert_same(MatchResult.from_h5(h["a/b"], r.keypoints0, r.keypoints1), r)


def test_matches_come_back_sorted_and_unstorable_ones_are_refused():
    r = result(k=0)
    r.matches, r.scores = np.array([[5, 0], [2, 1]]), np.array([0.1, 0.2], np.float32)
    back = MatchResult.from_arrays(r.to_arrays())
    np.testing.assert_array_equal(back.matches, [[2, 1], [5, 0]])
    np.testing.assert_array_equal(back.scores, np.array([0.2, 0.1], np.float32))
    r.matches = np.array([[2, 0], [2, 1]])  # one keypoint of image 0 matched twice
    with pytest.raises(ValueError, match="matched twice"):
        r.to_arrays()
    r.matches = np.array([[2, 0], [3, 7]])
    with pytest.raises(ValueError, match="outside the keypoints"):
        r.to_arrays()


def test_results_of_the_old_runner_layout_are_read(tmp_path):
    with h5py.File(tmp_path / "p.h5", "w") as h:
        g = h.create_group("pair")  # what the evaluation runner wrote before format version 1
        g["keypoints0"] = np.array([[0, 0], [1, 1], [2, 2]], np.float32)
        g["keypoints1"] = np.array([[5, 5], [6, 6]], np.float32)
        g["matches"] = np.array([[2, 0], [0, 1]], np.int64)
        g["scores"] = np.array([0.9, 0.8], np.float32)
        g.attrs["image_size0"] = np.array([100, 50])
        g.attrs["image_size1"] = np.array([80, 40])
        g.attrs["time_extract"], g.attrs["time_match"] = 0.5, 0.25
        g.attrs["done"] = True
    with h5py.File(tmp_path / "p.h5", "r") as h:
        r = MatchResult.from_h5(h["pair"])
    np.testing.assert_array_equal(r.matches, [[2, 0], [0, 1]])
    np.testing.assert_array_equal(r.points1, [[5, 5], [6, 6]])
    assert (r.image_size0, r.image_size1) == ((100, 50), (80, 40))
    assert r.timings == {"extract": 0.5, "match": 0.25} and r.extra == {}


def test_a_newer_format_is_refused_with_the_file_named(tmp_path):
    with h5py.File(tmp_path / "new.h5", "w") as h:
        result().to_h5(h)
        h.attrs["tiepoint_format_version"] = FORMAT_VERSION + 1
    with (
        h5py.File(tmp_path / "new.h5", "r") as h,
        pytest.raises(DatasetError, match=r"new\.h5:/: format version 2 is newer"),
    ):
        MatchResult.from_h5(h)


def test_rewriting_a_group_drops_fields_no_longer_present(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as h:
        result(dense=dense_result(), lines0=np.ones((3, 2, 2), np.float32)).to_h5(h)
        result(seed=1).to_h5(h)
    with h5py.File(tmp_path / "x.h5", "r") as h:
        assert "dense" not in h and "lines0" not in h
        assert_same(MatchResult.from_h5(h), result(seed=1))


def test_dense_result_is_a_sub_group_written_only_when_present(tmp_path):
    d = dense_result(4, 10)
    with h5py.File(tmp_path / "x.h5", "w") as h:
        result().to_h5(h.create_group("plain"))
        result(dense=d).to_h5(h.create_group("pair"))
        result(dense=dense_result(2, 2, seed=5)).to_h5(h.create_group("twice"))
        result(dense=d).to_h5(h["twice"])  # rewriting replaces the old dense group
    with h5py.File(tmp_path / "x.h5", "r") as h:
        assert "dense" not in h["plain"] and "warp" not in h["pair"]
        assert sorted(h["pair/dense"]) == ["certainty", "warp"]
        assert h["pair/dense/warp"].shape == (4, 10, 4) and h["pair/dense/warp"].dtype == np.float32
        assert h["pair/dense/certainty"].dtype == np.float32
        np.testing.assert_array_equal(h["twice/dense/warp"][()], d.warp)
        assert MatchResult.from_h5(h["plain"]).dense is None
        assert MatchResult.from_h5(h["pair"]).extra == {}


def test_a_broken_dense_group_is_an_error_naming_the_file(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as h:
        result(dense=dense_result(4, 10)).to_h5(h)
        del h["dense/certainty"]
        h["dense/certainty"] = np.zeros((3, 3), np.float32)
    with (
        h5py.File(tmp_path / "x.h5", "r") as h,
        pytest.raises(DatasetError, match=r"x\.h5:/: dense certainty of shape \(3, 3\)"),
    ):
        MatchResult.from_h5(h)


def test_dense_result_tells_dkms_symmetric_layout_from_a_one_way_grid():
    h, w = 3, 4
    xs, ys = -1 + (2 * np.arange(w) + 1) / w, -1 + (2 * np.arange(h) + 1) / h
    grid = np.stack(np.meshgrid(xs, ys), -1)  # (h, w, 2) cell centres
    rng = np.random.default_rng(0)
    there = rng.uniform(-1, 1, (h, w, 2))
    one_way = DenseResult(np.concatenate([grid, there], -1), np.ones((h, w)))
    # DKM: A→B on the left, B→A on the right, both rows in (xA, yA, xB, yB) order
    sym = DenseResult(
        np.concatenate([one_way.warp, np.concatenate([there, grid], -1)], 1), rng.random((h, 2 * w))
    )
    assert not one_way.symmetric and sym.symmetric
    np.testing.assert_array_equal(sym.grid0()[0], one_way.warp)
    np.testing.assert_array_equal(sym.grid0()[1], sym.certainty[:, :w])
    assert one_way.grid0()[0] is one_way.warp
    with pytest.raises(ValueError, match="expected \\(H, W, 4\\)"):
        DenseResult(np.zeros((3, 4, 2)), np.zeros((3, 4)))
