"""SIFT and nearest-neighbour matching against brute force and ground-truth homographies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tiepoint.models.extractors.sift import root_sift
from tiepoint.models.matchers.nearest_neighbor import NearestNeighborMatcher


def _brute_force(d0, d1, ratio, mutual):
    dist = ((d0[:, None] - d1[None]) ** 2).sum(-1)
    out = []
    for i in range(len(d0)):
        order = np.argsort(dist[i])
        j = order[0]
        ok = True
        if ratio is not None:
            ok &= dist[i, order[0]] <= ratio**2 * dist[i, order[1]]
        if mutual:
            ok &= np.argmin(dist[:, j]) == i
        out.append(j if ok else -1)
    return np.array(out)


@pytest.mark.parametrize("ratio, mutual", [(None, True), (0.8, True), (0.9, False)])
def test_nn_matches_brute_force(ratio, mutual):
    g = np.random.default_rng(0)
    d0 = g.normal(size=(60, 16)).astype(np.float32)
    d1 = np.concatenate([d0[:30] + 0.2 * g.normal(size=(30, 16)), g.normal(size=(40, 16))]).astype(
        np.float32
    )
    d0 /= np.linalg.norm(d0, axis=1, keepdims=True)
    d1 /= np.linalg.norm(d1, axis=1, keepdims=True)
    nn = NearestNeighborMatcher(ratio_thresh=ratio, mutual_check=mutual)
    out = nn(
        {
            "keypoints0": torch.zeros(1, 60, 2),
            "keypoints1": torch.zeros(1, 70, 2),
            "descriptors0": torch.from_numpy(d0)[None],
            "descriptors1": torch.from_numpy(d1)[None],
        }
    )
    np.testing.assert_array_equal(out["matches0"][0].numpy(), _brute_force(d0, d1, ratio, mutual))
    m1 = out["matches1"][0].numpy()
    for i, j in enumerate(out["matches0"][0].numpy()):
        if j >= 0 and mutual:  # without the mutual check several points may pick the same j
            assert m1[j] == i


def test_rootsift_is_hellinger():
    g = np.random.default_rng(1)
    a, b = g.random((2, 128)).astype(np.float32) * 100
    ra, rb = root_sift(a[None])[0], root_sift(b[None])[0]
    hellinger = np.sum(np.sqrt(a / a.sum() * b / b.sum()))
    assert np.dot(ra, rb) == pytest.approx(hellinger, rel=1e-4)
    assert np.linalg.norm(ra) == pytest.approx(1.0, rel=1e-4)
