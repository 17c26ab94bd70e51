"""Training datasets behind one base class; `get_dataset(conf)` builds one from its `name`.

A name may also be a dotted path `package.module:Class` to plug in a dataset of your own.
"""

from __future__ import annotations

import difflib
import importlib

from ..errors import ConfigError

DATASETS: dict[str, str] = {
    "homographies": "tiepoint.datasets.homographies:Homographies",
    "megadepth": "tiepoint.datasets.megadepth:MegaDepth",
    "posed_images": "tiepoint.datasets.posed_images:PosedImages",
}


def dataset_class(name: str):
    target = DATASETS.get(name) or (name if name and ":" in name else None)
    if target is None:
        near = difflib.get_close_matches(str(name), sorted(DATASETS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(f"unknown dataset '{name}'{hint}; valid: {', '.join(sorted(DATASETS))}")
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def get_dataset(conf):
    """Build a dataset from a config whose `name` picks the class."""
    if conf is None or not conf.get("name"):
        raise ConfigError("data.name is missing (valid: " + ", ".join(sorted(DATASETS)) + ")")
    return dataset_class(conf["name"])(conf)
