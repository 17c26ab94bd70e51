"""Pair lists: counts from combinatorics, windows, and retrieval against known similarity."""

import numpy as np
import pytest

from tiepoint.errors import ConfigError, DatasetError
from tiepoint.reconstruction import pairs as P
from tiepoint.reconstruction import retrieval

NAMES = [f"im{i:02d}.jpg" for i in range(9)]


def test_exhaustive_is_every_unordered_pair_once():
    pairs = P.exhaustive(NAMES)
    assert len(pairs) == 9 * 8 // 2
    assert len({frozenset(p) for p in pairs}) == len(pairs)
    assert all(NAMES.index(a) < NAMES.index(b) for a, b in pairs)


@pytest.mark.parametrize("window", [1, 3, 20])
def test_sequential_window(window):
    pairs = P.sequential(NAMES, window)
    n = len(NAMES)
    # each image i pairs with min(window, n-1-i) successors
    assert len(pairs) == sum(min(window, n - 1 - i) for i in range(n))
    gaps = {NAMES.index(b) - NAMES.index(a) for a, b in pairs}
    assert gaps == set(range(1, min(window, n - 1) + 1))


def test_canonical_drops_self_and_reversed_duplicates():
    raw = [
        ("im03.jpg", "im01.jpg"),
        ("im01.jpg", "im03.jpg"),
        ("im02.jpg", "im02.jpg"),
        ("im00.jpg", "im05.jpg"),
    ]
    assert P.canonical(raw, NAMES) == [("im00.jpg", "im05.jpg"), ("im01.jpg", "im03.jpg")]
    with pytest.raises(DatasetError, match="nope.jpg"):
        P.canonical([("im00.jpg", "nope.jpg")], NAMES)


def test_pair_spec_parsing():
    assert P.PairSpec.parse("exhaustive") == P.PairSpec("exhaustive")
    assert P.PairSpec.parse("sequential:5") == P.PairSpec("sequential", 5)
    assert P.PairSpec.parse("retrieval:20").n == 20
    for bad in ("sequential:0", "neighbours:3", "exhaustive:4", "retrieval:x"):
        with pytest.raises(ConfigError, match="--pairs"):
            P.PairSpec.parse(bad)


def test_retrieval_finds_the_planted_neighbours():
    # three groups of three images; members of a group share a direction plus noise
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64))
    desc = np.repeat(centres, 3, 0) + 0.1 * rng.normal(size=(9, 64))
    pairs = P.retrieval(NAMES, desc, k=2)
    groups = {n: i // 3 for i, n in enumerate(NAMES)}
    assert all(groups[a] == groups[b] for a, b in pairs)
    assert len(pairs) == 9  # the 3 pairs inside each group, each found from both sides
    # chunking does not change the result
    assert P.retrieval(NAMES, desc, k=2, chunk=2) == pairs


def test_vlad_groups_descriptor_sets_of_the_same_place():
    # each "place" draws local descriptors around its own 5 modes; VLAD must tell places apart
    rng = np.random.default_rng(1)
    modes = [rng.normal(size=(5, 32)) for _ in range(3)]
    store = _FakeStore()
    names = []
    for place in range(3):
        for view in range(3):
            x = modes[place][rng.integers(0, 5, 200)] + 0.2 * rng.normal(size=(200, 32))
            name = f"p{place}_v{view}"
            store.data[name] = {"descriptors": x.T.astype(np.float32), "scores": rng.random(200)}
            names.append(name)
    desc = retrieval.global_descriptors(store, names, num_centres=8)
    pairs = P.retrieval(names, desc, k=2)
    assert all(a[:2] == b[:2] for a, b in pairs)
    # deterministic
    np.testing.assert_array_equal(desc, retrieval.global_descriptors(store, names, num_centres=8))


def test_pairs_file_round_trip(tmp_path):
    pairs = P.sequential(NAMES, 2)
    path = P.write_pairs(tmp_path / "pairs.txt", pairs)
    assert P.read_pairs(path) == pairs
    with pytest.raises(DatasetError, match="whitespace"):
        P.write_pairs(tmp_path / "x.txt", [("a b.jpg", "c.jpg")])


class _FakeStore:
    def __init__(self):
        self.data = {}

    def arrays(self, name):
        return self.data[name]
