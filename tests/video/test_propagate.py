"""Propagation to wide baselines (GIM §2.3) against exact truth: labels written in GIM's layout
from known per-frame homographies, propagated, and checked against the composed homography."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from tiepoint.errors import DatasetError
from tiepoint.video import propagate as P
from tiepoint.video.propagate import (
    LabelSet,
    PropagateConf,
    link,
    load_propagated,
    propagate_video,
    seed_pairs,
)

from .synthetic_labels import Scene, gt_error, write_gim_labels

VIDEO = "walk test"
SKIPS = (5, 10, 20)


@pytest.fixture(scope="module")
def pseudo(tmp_path_factory):
    return write_gim_labels(tmp_path_factory.mktemp("labels") / "pseudo", Scene(), VIDEO)


@pytest.fixture(scope="module")
def propagated(pseudo, tmp_path_factory):
    out = tmp_path_factory.mktemp("prop")
    return propagate_video(pseudo, VIDEO, out, max_samples=4), out


def files_of(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def test_propagated_labels_match_composed_homography(pseudo, propagated):
    summary, _ = propagated
    # input: the labels at each skip are 98% within 3 px (2% outliers by construction)
    direct = np.load(next((pseudo / "WALK SIFT [R] F [S] 20").iterdir()) / "[ 0 20].npy")
    assert 0.97 < (gt_error(direct, 0, 20) <= 3).mean() < 0.99
    assert summary["written"] == summary["targets"] >= 3
    assert len(summary["label_sets"]) == 12
    spans = []
    for f in sorted(summary["folder"].glob("*_*.npy")):
        labels, i0, i1 = load_propagated(f)
        a, b = map(int, f.stem.split("_"))
        assert i0 == a and b >= i1 > i0  # named by the target, row 0 = the pair reached
        err = gt_error(labels, i0, i1)
        assert len(labels) >= 512
        assert (err <= 3).mean() > 0.99, f"{f.name}: precision {(err <= 3).mean():.3f}"
        spans.append(i1 - i0)
    # wide baselines: several times the largest skip
    assert min(spans) >= 2 * SKIPS[-1] and max(spans) >= 5 * SKIPS[-1]


def test_resume_after_kill_gives_identical_output(pseudo, propagated, tmp_path, monkeypatch):
    summary, _ = propagated
    real = P.Propagator.propagate_pair
    calls = {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *a, **k)

    monkeypatch.setattr(P.Propagator, "propagate_pair", dying)
    with pytest.raises(KeyboardInterrupt):
        propagate_video(pseudo, VIDEO, tmp_path, max_samples=4)
    monkeypatch.setattr(P.Propagator, "propagate_pair", real)
    folder = summary["folder"]
    resumed = tmp_path / folder.parent.name / VIDEO
    assert len(files_of(resumed)) == 2
    again = propagate_video(pseudo, VIDEO, tmp_path, max_samples=4)
    assert again["written"] == summary["targets"] - 2
    assert files_of(resumed) == files_of(folder)


def test_rejections_go_to_bad_pairs_in_target_order(pseudo, tmp_path):
    s = propagate_video(pseudo, VIDEO, tmp_path, max_samples=4, min_inliers=10**6)
    targets = seed_pairs(P.find_label_sets(pseudo, VIDEO), PropagateConf(max_samples=4))
    assert s["written"] == 0 and s["bad"] == len(targets)
    text = (s["folder"] / "bad_pairs.txt").read_text()
    assert text == "".join(f"{a} {b}\n" for a, b in targets.tolist())
    # a second run skips them all
    assert propagate_video(pseudo, VIDEO, tmp_path, max_samples=4, min_inliers=10**6)["bad"] == len(
        targets
    )


def test_label_set_subset_is_a_choice_and_gim_rule_optional(pseudo, tmp_path):
    sift = [f"WALK SIFT [R] {r} [S] {s:2}" for r in "FT" for s in SKIPS]
    s = propagate_video(pseudo, VIDEO, tmp_path, max_samples=2, label_sets=sift)
    assert s["label_sets"] == sift
    assert s["folder"].parent.name == "SIFT 5 10 20 F T FM 32 PM 512"
    with pytest.raises(DatasetError, match="12 label sets, GIM requires 24"):
        propagate_video(pseudo, VIDEO, tmp_path, require_gim_sets=True)


def test_empty_or_broken_label_sets(pseudo, tmp_path, caplog):
    root = tmp_path / "pseudo"
    shutil.copytree(pseudo / "WALK SIFT [R] F [S] 20", root / "WALK SIFT [R] F [S] 20")
    shutil.copytree(pseudo / "WALK SIFT [R] T [S] 20", root / "WALK SIFT [R] T [S] 20")
    inner = next((root / "WALK SIFT [R] T [S] 20").iterdir())
    np.save(inner / "idxs.npy", np.zeros((0, 2), np.int64))
    np.save(inner / "nums.npy", np.zeros(0, np.int64))
    with caplog.at_level(logging.WARNING):
        sets = P.find_label_sets(root, VIDEO)
    assert [s.name for s in sets] == ["WALK SIFT [R] F [S] 20"]
    assert "WALK SIFT [R] T [S] 20 of walk test is empty; skipped" in caplog.text
    with pytest.raises(DatasetError, match="no non-empty label set for video 'other'"):
        propagate_video(root, "other", tmp_path / "out")
    (next((root / "WALK SIFT [R] F [S] 20").iterdir()) / "nums.npy").unlink()
    with pytest.raises(DatasetError, match=r"nums\.npy: nums\.npy not found"):
        propagate_video(root, VIDEO, tmp_path / "out")


def test_link_rounds_middle_positions_last_row_wins_sorted_by_left_row():
    a = np.array(
        [[0, 0, 10.2, 5.4], [1, 1, 20.0, 5.0], [2, 2, 10.4, 4.6], [3, 3, 99, 99]], np.float32
    )  # rows 0 and 2 share the rounded middle position (10, 5): row 2 wins
    b = np.array([[20.3, 4.8, 7, 7], [9.6, 5.2, 8, 8], [50, 50, 9, 9]], np.float32)
    out = link(a, b, min_matches=2)
    np.testing.assert_array_equal(out, [[1, 1, 7, 7], [2, 2, 8, 8]])
    assert link(a, b, min_matches=3) is None


def test_seed_rule_needs_every_set_and_the_first_hop_covered():
    def ls(skip, idxs, nums=None):
        idxs = np.array(idxs, np.int64).reshape(-1, 2)
        nums = np.full(len(idxs), 100) if nums is None else np.array(nums)
        return LabelSet("x", "M", "F", skip, None, (640, 480), idxs, nums)

    big = [[i, i + 4] for i in range(0, 40, 1)]
    mid = [[i, i + 2] for i in range(0, 40)]
    small = [[i, i + 1] for i in range(0, 40) if i != 13]  # 13 uncovered at the smallest skip
    few = np.full(len(big), 100)
    few[[5]] = 32  # not more than min_filter_matches in one set
    sets = [ls(4, big), ls(4, big, few), ls(2, mid), ls(1, small)]
    conf = PropagateConf(step=0)
    starts = seed_pairs(sets, conf)[:, 0].tolist()
    # 5 fails the count; 1 needs 5 as the next hop; 10..13 need 13 at +0..+3 of the small skip
    for bad in (5, 1, 10, 11, 12, 13):
        assert bad not in starts
    assert {0, 2, 3, 4, 6, 9, 14, 35} <= set(starts)
    # targets: idx0 + step*S clipped to the last seed pair's end; spans below S dropped
    t = seed_pairs(sets, PropagateConf(step=3))
    # (the last seed is 35: 36 + 4 = 40 starts no largest-skip pair; its end is 39)
    assert max(starts) == 35
    assert t[0].tolist() == [0, 12] and t[:, 1].max() == 39 and t[-1].tolist() == [35, 39]


def test_chain_picture_is_written_and_not_blank(pseudo, tmp_path):
    import cv2

    from .synthetic_labels import H, W, frame_homography

    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (H * 2, W * 2, 3)).astype(np.uint8), (0, 0), 3)
    frames = tmp_path / "frames"
    frames.mkdir()
    for t in range(0, 161, 5):  # the frame cache in GIM's `{idx}.png` layout
        Hm = frame_homography(t) @ np.array([[1, 0, -150], [0, 1, -200], [0, 0, 1.0]])
        cv2.imwrite(str(frames / f"{t}.png"), cv2.warpPerspective(texture, Hm, (W, H)))
    s = P.show_chain(pseudo, VIDEO, tmp_path / "chain.png", frames_dir=frames, dpi=45)
    assert s["labels"] >= 512 and s["pair"][1] - s["pair"][0] >= 2 * SKIPS[-1]
    assert [h[0] for h in s["hops"]][:2] == [(s["pair"][0], s["pair"][0] + 20)] + [
        (s["pair"][0] + 20, s["pair"][0] + 40)
    ]
    img = cv2.imread(str(tmp_path / "chain.png"))
    assert img is not None and img.shape[0] > 11 * 45 - 5 and img.shape[1] > 16 * 45 - 5
    assert img.std() > 20  # pictures, lines and a plot, not a blank canvas
    assert len(np.unique(img.reshape(-1, 3), axis=0)) > 1000
