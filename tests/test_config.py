"""Config merging: presets, dotted overrides, and unknown keys that name the closest valid key."""

from __future__ import annotations

import re

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


def test_every_registry_lookup_says_did_you_mean():
    """One spelling of the "unknown name" error across registries, each with its error family."""
    from tiepoint.datasets import dataset_class
    from tiepoint.errors import DatasetError, EstimatorError, WeightsError
    from tiepoint.estimators import estimate_homography
    from tiepoint.evaluation.benchmarks import get_benchmark
    from tiepoint.models import model_class
    from tiepoint.weights import resolve

    cases = [
        (lambda: model_class("matcher", "lightglu"), ConfigError, "matcher", "lightglue"),
        (lambda: dataset_class("megadeth"), ConfigError, "dataset", "megadepth"),
        (lambda: get_benchmark("hpatchs"), DatasetError, "benchmark", "hpatches"),
        (
            lambda: estimate_homography([[0, 0]] * 4, [[0, 0]] * 4, estimator="poselb"),
            EstimatorError,
            "estimator",
            "poselib",
        ),
        (lambda: resolve("aliked_lightglu"), WeightsError, "weights", "aliked_lightglue"),
        (lambda: load_preset("pipelines", "sift+n"), ConfigError, "pipeline", "sift+nn"),
    ]
    for call, error, kind, near in cases:
        with pytest.raises(
            error, match=rf"unknown {kind} '.*' \(did you mean '{re.escape(near)}'\?\); valid: "
        ):
            call()


def test_conf_diff_lists_every_differing_leaf():
    from tiepoint.config import conf_diff

    a = {"matcher": {"n_layers": 9, "weights": "x", "loss": {"gamma": 1}}, "resize": 1024}
    b = {"matcher": {"n_layers": 3, "weights": None, "extra": 1}, "resize": 1024}
    assert conf_diff(a, b) == [
        "matcher.extra: None → 1",
        "matcher.loss: {'gamma': 1} → None",
        "matcher.n_layers: 9 → 3",
        "matcher.weights: 'x' → None",
    ]
    assert conf_diff(a, b, skip=("weights", "loss", "extra")) == ["matcher.n_layers: 9 → 3"]
    assert conf_diff(a, a) == []
