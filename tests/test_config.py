"""Config merging: presets, dotted overrides, and unknown keys that name the closest valid key."""

from __future__ import annotations

import pytest

from tiepoint.api import pipeline_conf
from tiepoint.config import load_preset, merge_strict, parse_dotlist
from tiepoint.errors import ConfigError
from tiepoint.models.matchers.nearest_neighbor import NearestNeighborMatcher


def test_unknown_key_names_the_closest_valid_one():
    with pytest.raises(
        ConfigError, match=r"unknown config key 'ratio_tresh'.*did you mean 'ratio_thresh'"
    ):
        NearestNeighborMatcher({"ratio_tresh": 0.8})


def test_dotted_overrides_reach_the_model():
    conf = pipeline_conf("sift+nn", ["matcher.ratio_thresh=0.7", "extractor.max_num_keypoints=100"])
    assert conf.matcher.ratio_thresh == 0.7 and conf.extractor.max_num_keypoints == 100
    assert NearestNeighborMatcher(conf.matcher).conf.ratio_thresh == 0.7


def test_unknown_pipeline_lists_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"unknown pipeline 'aliked\+lightgleu'.*did you mean 'aliked\+lightglue'.*valid: .*sift\+nn",
    ):
        load_preset("pipelines", "aliked+lightgleu")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key=value"):
        parse_dotlist(["matcher.ratio_thresh"])


def test_merge_strict_keeps_defaults_and_refuses_new_nested_keys():
    conf = merge_strict({"a": 1, "b": {"c": 2}}, {"b": {"c": 3}})
    assert conf.a == 1 and conf.b.c == 3
    with pytest.raises(ConfigError, match="did you mean 'b.c'|did you mean 'c'"):
        merge_strict({"a": 1, "b": {"c": 2}}, {"b": {"cc": 3}})
