"""GIM's balanced sampler: per-dataset resampling to `maxlen`, scene weights 1/n^0.75."""

from __future__ import annotations

import numpy as np
import pytest

from tiepoint.datasets.balanced import BalancedSampler, scene_weights
from tiepoint.errors import ConfigError


def test_scene_weights():
    w = scene_weights(["a"] * 16 + ["b"] * 1)
    assert w[0] == pytest.approx(1 / 8) and w[-1] == pytest.approx(1.0)


def test_large_dataset_draws_favour_small_scenes():
    scenes = ["A"] * 1000 + ["B"] * 100  # uniform: 9% from B
    s = BalancedSampler([scenes], maxlen=5, seed=0)
    share = []
    for e in range(400):
        s.set_epoch(e)
        idx = s.indices()
        assert len(idx) == 5 and len(set(idx.tolist())) == 5  # without replacement
        share.append(np.mean(idx >= 1000))
    # weights 1/n^0.75: B's mass 100/100^.75 against A's 1000/1000^.75 → 24% of the draws
    mass_b, mass_a = 100**0.25, 1000**0.25
    assert np.mean(share) == pytest.approx(mass_b / (mass_a + mass_b), abs=0.03)


def test_small_dataset_keeps_everything_and_is_upsampled_and_datasets_alternate():
    s = BalancedSampler([["x"] * 7, ["y"] * 50], maxlen=20, seed=3)
    idx = s.indices()
    assert len(idx) == len(s) == 40
    first, second = idx[0::2], idx[1::2]  # equal maxlen: strict round robin
    assert (first < 7).all() and (second >= 7).all() and (second < 57).all()
    assert set(range(7)) <= set(first.tolist()) and len(first) == 20
    assert len(set(second.tolist())) == 20


def test_epochs_resume_and_shards():
    scenes = [["a"] * 30 + ["b"] * 5, ["c"] * 12]
    s = BalancedSampler(scenes, maxlen=[16, 8], seed=1)
    a = s.indices()
    assert (a == s.indices()).all()
    s.set_epoch(1)
    assert not (a == s.indices()).all()
    s.set_epoch(0)
    s.set_start(5)
    assert list(s) == a[5:].tolist() and len(s) == 19
    shards = [BalancedSampler(scenes, [16, 8], 1, r, 2).indices() for r in (0, 1)]
    assert sorted(np.r_[shards[0], shards[1]].tolist()) == sorted(a.tolist())
    with pytest.raises(ConfigError, match="divisible by world size 3"):
        BalancedSampler(scenes, [16, 8], 1, 0, 3)
