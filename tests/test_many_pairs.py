"""Matcher.extract_many / match_pairs / match_features_batch: each image extracted once, and the
padded batch path equal to one pair at a time (LightGlue, LighterGlue) on real pairs."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import tiepoint
from tiepoint.batching import collate_pairs

FIXED = ["matcher.depth_confidence=-1", "matcher.width_confidence=-1"]  # adaptivity off
SMALL = ["extractor.max_num_keypoints=384"]


def _images(data_dir):
    h = data_dir / "homography"
    return [
        h / "oxford_boat" / "img1.png",
        h / "oxford_boat" / "img3.png",
        h / "hpatches_v_graffiti" / "1.png",
        h / "hpatches_v_graffiti" / "2.png",
    ]


@pytest.fixture(scope="module")
def aliked_fixed(official_weights):
    official_weights("aliked-n16", "aliked_lightglue")
    return tiepoint.Matcher("aliked+lightglue", resize=512, device="cpu", overrides=FIXED + SMALL)


def _head(f: tiepoint.Features, n: int) -> tiepoint.Features:
    """The first n keypoints of `f`: sets of different sizes, so the batch must pad."""
    return tiepoint.Features(
        f.keypoints[:n], f.keypoint_scores[:n], f.descriptors[:n], f.image_size
    )


def _same(a: tiepoint.MatchResult, b: tiepoint.MatchResult) -> None:
    """Equal up to float rounding: ≥ 99% of the matches shared, their scores within 1e-3 (padding
    changes the summation order of the attention; measured differences are ≤ 1.5e-4)."""
    sa = {tuple(m): s for m, s in zip(a.matches.tolist(), a.scores, strict=True)}
    sb = {tuple(m): s for m, s in zip(b.matches.tolist(), b.scores, strict=True)}
    common = set(sa) & set(sb)
    assert len(common) >= 0.99 * max(len(sa), len(sb))
    assert max((abs(sa[k] - sb[k]) for k in common), default=0) < 1e-3


@pytest.fixture(scope="module")
def boat_graffiti(data_dir, aliked_fixed):
    """Features of the four test images, extracted once for the module."""
    return aliked_fixed.extract_many(_images(data_dir), progress=False)


@pytest.fixture(scope="module")
def singles(aliked_fixed, boat_graffiti):
    """Each of the six pairs matched on its own (`match_features`): the truth to compare with."""
    f = boat_graffiti
    return {
        (a, b): aliked_fixed.match_features(f[a], f[b]) for a, b in itertools.combinations(f, 2)
    }


def test_match_pairs_extracts_each_image_once(
    data_dir, aliked_fixed, boat_graffiti, singles, monkeypatch
):
    m = aliked_fixed
    paths = _images(data_dir)
    calls = []
    extract = m.extract

    def counted(image, resize=None):
        calls.append(str(image))
        return extract(image, resize)

    monkeypatch.setattr(m, "extract", counted)
    given = {str(p): boat_graffiti[str(p)] for p in paths[:2]}
    pairs = list(itertools.combinations(paths, 2))
    out = list(m.match_pairs(pairs, features=given, progress=False))
    # 6 pairs, 4 images: the two given are reused, the other two extracted once each
    assert sorted(calls) == sorted(map(str, paths[2:]))
    assert set(given) == set(map(str, paths))  # the caller's dict now holds all four
    assert [(a, b) for a, b, _ in out] == [(str(a), str(b)) for a, b in pairs]
    assert out[0][2].keypoints0 is given[str(paths[0])].keypoints
    # without `features`: again each image once (a private cache)
    calls.clear()
    again = list(m.match_pairs(pairs[3:], progress=False))  # (1,2) (1,3) (2,3)
    assert sorted(calls) == sorted(map(str, paths[1:]))
    # the same matches as matching each pair's features directly
    for a, b, r in out:
        _same(r, singles[a, b])
    for (_, _, r), (_, _, r2) in zip(out[3:], again, strict=True):
        _same(r, r2)


def test_padded_batch_equals_one_pair_at_a_time(aliked_fixed, boat_graffiti):
    m = aliked_fixed
    names = list(boat_graffiti)
    feats = {
        k: _head(f, n)
        for (k, f), n in zip(boat_graffiti.items(), (384, 300, 340, 250), strict=True)
    }
    assert (
        len({len(f) for f in feats.values()}) == 4
    )  # the sets differ in size: padding is exercised
    pairs = [(feats[a], feats[b]) for a, b in itertools.combinations(names, 2)]
    single = [m.match_features(f0, f1) for f0, f1 in pairs]
    batched = m.match_features_batch(pairs)
    for s, b in zip(single, batched, strict=True):
        _same(s, b)
    # boat 1→3 and graffiti 1→2 overlap: the batch finds their many matches, not noise
    assert len(batched[0]) > 100 and len(batched[-1]) > 100
    # match_pairs with batch_size gives the same results in the same order
    out = list(
        m.match_pairs(
            itertools.combinations(names, 2), features=feats, batch_size=4, progress=False
        )
    )
    for (_, _, r), b in zip(out, batched, strict=True):
        np.testing.assert_array_equal(r.matches, b.matches)


def test_padded_batch_lighterglue_and_an_empty_set(data_dir, official_weights):
    official_weights("xfeat", "xfeat-lighterglue")
    m = tiepoint.Matcher("xfeat+lighterglue", resize=512, device="cpu", overrides=FIXED + SMALL)
    paths = _images(data_dir)[:3]
    feats = m.extract_many(paths, progress=False)
    f0, f1, f2 = (_head(feats[str(p)], n) for p, n in zip(paths, (500, 300, 420), strict=True))
    empty = tiepoint.Features(
        np.zeros((0, 2), np.float32),
        np.zeros(0, np.float32),
        np.zeros((0, 64), np.float32),
        (64, 64),
    )
    pairs = [(f0, f1), (f0, f2), (empty, f1)]
    batched = m.match_features_batch(pairs)
    for (a, b), r in zip(pairs[:2], batched[:2], strict=True):
        _same(m.match_features(a, b), r)
    assert len(batched[2]) == 0
    data = collate_pairs(pairs, "cpu")
    assert data["mask0"].sum(1).tolist() == [len(f0), len(f0), 0]
    # the padded points are truly masked out: garbage in them changes nothing, bit for bit
    with torch.inference_mode():
        clean = m.matcher(data)
        g = torch.Generator().manual_seed(0)
        for i in "01":
            pad = ~data[f"mask{i}"]
            for key in ("keypoints", "descriptors"):
                t = data[f"{key}{i}"]
                t[pad] = 1e3 * torch.randn(t[pad].shape, generator=g)
        dirty = m.matcher(data)
    for key in ("matches0", "matches1", "matching_scores0", "matching_scores1"):
        assert torch.equal(clean[key], dirty[key])
