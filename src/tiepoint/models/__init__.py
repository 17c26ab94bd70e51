"""Model registry: short names → classes, imported lazily so `import tiepoint` stays fast.

A name may also be a dotted path `package.module:Class` to plug in a model of your own.
"""

from __future__ import annotations

import difflib
import importlib

from ..errors import ConfigError

REGISTRY: dict[str, dict[str, str]] = {
    "extractor": {
        "sift": "tiepoint.models.extractors.sift:SIFT",
        "aliked": "tiepoint.models.extractors.aliked:ALIKED",
        "disk": "tiepoint.models.extractors.disk:DISK",
        "xfeat": "tiepoint.models.extractors.xfeat:XFeat",
        "superpoint": "tiepoint.models.extractors.superpoint:SuperPoint",
    },
    "matcher": {
        "nearest_neighbor": "tiepoint.models.matchers.nearest_neighbor:NearestNeighborMatcher",
        "lightglue": "tiepoint.models.matchers.lightglue:LightGlue",
        "diffglue": "tiepoint.models.matchers.diffglue:DiffGlue",
    },
}


def model_class(kind: str, name: str):
    target = REGISTRY.get(kind, {}).get(name)
    if target is None and ":" in name:
        target = name
    if target is None:
        valid = sorted(REGISTRY.get(kind, {}))
        near = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"unknown {kind} '{name}'{hint}; valid: {', '.join(valid)}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def get_model(kind: str, conf) -> BaseModel:  # noqa: F821
    """Build a model of `kind` from a config whose `name` picks the class."""
    return model_class(kind, conf["name"])(conf)
