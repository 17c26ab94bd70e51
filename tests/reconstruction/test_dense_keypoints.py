"""Quantising dense matches into per-image keypoints (reconstruction/dense_keypoints.py)."""

from __future__ import annotations

import numpy as np
import pytest
from dense_oracle import oracle_pipeline

import tiepoint
from tiepoint.errors import ConfigError
from tiepoint.geometry.homography import warp_points
from tiepoint.reconstruction.dense_keypoints import PairPoints, cell_of, one_to_one, quantise


def test_points_within_a_cell_merge_at_the_best_point():
    # cell 2 px: pixels 10 and 11 share a cell ([-0.5, 1.5) + 10), pixel 12 starts the next
    a = np.array([[10.2, 4.0], [10.9, 4.3], [12.0, 4.0]])
    b = np.array([[50.0, 5.0], [70.0, 5.0], [90.0, 5.0]])
    q = quantise([PairPoints("A", "B", a, b, np.array([0.5, 0.9, 0.7]))], cell=2)
    # A: two keypoints, the merged one at the better (score 0.9) point
    np.testing.assert_allclose(q.keypoints["A"], [[10.9, 4.3], [12.0, 4.0]], atol=1e-6)
    np.testing.assert_allclose(q.scores["A"], [0.9, 0.7])
    assert len(q.keypoints["B"]) == 3
    # keypoint 0 of A matched twice (to B's 0 and 1): the better match stays
    m, s = q.matches[("A", "B")]
    np.testing.assert_array_equal(m, [[0, 1], [1, 2]])
    np.testing.assert_allclose(s, [0.9, 0.7])


def test_cells_follow_pixel_boundaries():
    x = np.array([[-0.5, -0.49], [1.49, 1.5], [3.49, 3.5]])
    np.testing.assert_array_equal(cell_of(x, 2), [[0, 0], [0, 1], [1, 2]])
    with pytest.raises(ConfigError, match="cell size"):
        quantise([], cell=0)


def test_one_to_one_keeps_the_best_of_each_side():
    m = np.array([[0, 0], [0, 1], [1, 1], [2, 1], [3, 3], [3, 3]])
    s = np.array([0.2, 0.8, 0.9, 0.1, 0.5, 0.4])
    mm, ss = one_to_one(m, s)
    # (1,1) 0.9 beats (0,1) 0.8 for keypoint 1 of image 1; then (0,0) is keypoint 0's best left
    np.testing.assert_array_equal(mm, [[0, 0], [1, 1], [3, 3]])
    np.testing.assert_allclose(ss, [0.2, 0.9, 0.5])


def test_reindexed_matches_point_to_the_cells_of_every_pair(tmp_path):
    rng = np.random.default_rng(0)
    pairs = []
    for n0, n1 in [("A", "B"), ("A", "C"), ("B", "C")]:
        p0, p1 = rng.uniform(0, 40, (300, 2)), rng.uniform(0, 40, (300, 2))
        pairs.append(PairPoints(n0, n1, p0, p1, rng.uniform(0.1, 1, 300)))
    q = quantise(pairs, cell=3)
    for p in pairs:
        m, _ = q.matches[(p.name0, p.name1)]
        assert len(np.unique(m[:, 0])) == len(m) == len(np.unique(m[:, 1]))
        for name, pts, idx in ((p.name0, p.points0, m[:, 0]), (p.name1, p.points1, m[:, 1])):
            kp = q.keypoints[name][idx]
            # every kept match's keypoint lies in the cell of one of this pair's points
            cells = {tuple(c) for c in cell_of(pts, 3)}
            assert all(tuple(c) in cells for c in cell_of(kp, 3))
    # one keypoint per occupied cell of each image
    for kp in q.keypoints.values():
        assert len({tuple(c) for c in cell_of(kp, 3)}) == len(kp)


def _tracks(q, names):
    """Connected components of (image, keypoint) nodes through the matches (union-find)."""
    parent = {}

    def find(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for (a, b), (m, _) in q.matches.items():
        for i, j in m:
            parent[find((a, int(i)))] = find((b, int(j)))
    comps = {}
    for node in list(parent):
        comps.setdefault(find(node), []).append(node)
    return [c for c in comps.values() if len(c) == 3 and {n for n, _ in c} == set(names)]


def test_oracle_matches_of_three_images_form_consistent_tracks():
    size = (640, 480)
    H_ab = np.array([[0.95, 0.05, 12.0], [-0.04, 1.0, 8.0], [1e-5, 0, 1]])
    H_ac = np.array([[1.05, -0.02, -15.0], [0.03, 0.97, 5.0], [0, 2e-5, 1]])
    H = {("A", "B"): H_ab, ("A", "C"): H_ac, ("B", "C"): H_ac @ np.linalg.inv(H_ab)}
    img = np.zeros((size[1], size[0], 3), np.float32)
    pairs = []
    for (a, b), h in H.items():
        pipe = oracle_pipeline(h, size, size, num_matches=1500, symmetric=False)
        r = tiepoint.Matcher(pipe, device="cpu").match(img, img)
        pairs.append(PairPoints(a, b, r.points0, r.points1, r.scores))
    q = quantise(pairs, cell=2)
    tracks = _tracks(q, "ABC")
    assert len(tracks) > 200  # the oracle samples image A on one grid in both of A's pairs
    kp = q.keypoints
    for t in tracks:
        pos = {n: kp[n][i].astype(np.float64) for n, i in t}
        # the track's points agree with the homographies up to the cell size
        for (a, b), h in H.items():
            assert np.linalg.norm(warp_points(h, pos[a][None])[0] - pos[b]) < 3.0
