"""Pipeline configs: a packaged preset (or YAML / dict) ⊕ dotted overrides, checked section by
section; which weights a pipeline needs, as its model classes say. Below `api` (which builds the
models) so that export and the UI can read pipelines without the matching machinery."""

from __future__ import annotations

from omegaconf import DictConfig, OmegaConf

from . import hard_pairs, runtime
from .config import load_preset, merge_strict, parse_dotlist
from .errors import ConfigError
from .models import model_class

PIPELINE_DEFAULTS = {
    "preprocessing": {"resize": 1024, "side": "long"},
    "extractor": {},
    "matcher": {},
}
DENSE = "dense"  # the section of a dense pipeline, in place of extractor + matcher
OPTIONAL_SECTIONS = ("hard_pairs", "runtime")  # options outside the models (their DEFAULTS)


def _as_overrides(overrides) -> DictConfig | None:
    if overrides is None:
        return None
    if isinstance(overrides, (DictConfig, dict)):
        return OmegaConf.create(overrides)
    return parse_dotlist(overrides)


def pipeline_conf(pipeline: str | DictConfig | dict, overrides=None) -> DictConfig:
    """Packaged preset (or YAML path / dict) ⊕ dotted overrides. Model sections are checked by the models."""
    base = (
        load_preset("pipelines", pipeline)
        if isinstance(pipeline, str)
        else OmegaConf.create(pipeline)
    )
    given = OmegaConf.merge(base, _as_overrides(overrides) or {})
    dense = DENSE in given
    # a dense pipeline gets no empty extractor/matcher sections (sparse configs stay as they were)
    defaults = {"preprocessing": PIPELINE_DEFAULTS["preprocessing"]} if dense else PIPELINE_DEFAULTS
    conf = OmegaConf.merge(defaults, given)
    valid = {*PIPELINE_DEFAULTS, DENSE, *OPTIONAL_SECTIONS}
    unknown = set(conf) - valid
    if unknown:
        raise ConfigError(f"unknown pipeline section(s) {sorted(unknown)}; valid: {sorted(valid)}")
    conf.preprocessing = merge_strict(
        PIPELINE_DEFAULTS["preprocessing"], conf.preprocessing, where="preprocessing"
    )
    if "hard_pairs" in conf:
        conf.hard_pairs = merge_strict(hard_pairs.DEFAULTS, conf.hard_pairs, where="hard_pairs")
        hard_pairs.check_conf(conf.hard_pairs)
    if "runtime" in conf:
        conf.runtime = merge_strict(runtime.DEFAULTS, conf.runtime, where="runtime")
        runtime.check_conf(conf.runtime)
    if dense:
        sparse = [s for s in ("extractor", "matcher") if s in conf]
        if sparse:
            raise ConfigError(
                f"a pipeline has either extractor + matcher or dense, not both; this one has "
                f"dense and {' and '.join(sparse)}"
            )
        if not (conf.dense or {}).get("name"):
            raise ConfigError("pipeline has no dense.name")
        return conf
    for section in ("extractor", "matcher"):
        if not conf[section].get("name"):
            raise ConfigError(f"pipeline has no {section}.name")
    return conf


def is_dense(conf: DictConfig) -> bool:
    """Whether a pipeline config (from `pipeline_conf`) is dense."""
    return DENSE in conf


def list_pipelines() -> list[str]:
    from .config import packaged_names

    return packaged_names("pipelines")


def pipeline_weights(pipeline: str) -> list[str]:
    """Registered weight names a pipeline needs (for `tiepoint models`), as its classes say."""
    conf = pipeline_conf(pipeline)
    if is_dense(conf):
        return model_class("dense", conf.dense.name).weight_names(conf.dense)
    return [
        name
        for kind in ("extractor", "matcher")
        for name in model_class(kind, conf[kind].name).weight_names(conf[kind])
    ]
