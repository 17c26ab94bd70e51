"""Training datasets behind one base class; `get_dataset(conf)` builds one from its `name`.

A name may also be a dotted path `package.module:Class` to plug in a dataset of your own.
"""

from __future__ import annotations

from ..config import resolve_class
from ..errors import ConfigError

DATASETS: dict[str, str] = {
    "homographies": "tiepoint.datasets.homographies:Homographies",
    "megadepth": "tiepoint.datasets.megadepth:MegaDepth",
    "mixed": "tiepoint.datasets.balanced:Mixed",
    "posed_images": "tiepoint.datasets.posed_images:PosedImages",
    "scannet": "tiepoint.datasets.scannet:ScanNet",
    "video_labels": "tiepoint.datasets.video_labels:VideoLabels",
}


def dataset_class(name: str):
    return resolve_class(DATASETS, name, "dataset")


def get_dataset(conf):
    """Build a dataset from a config whose `name` picks the class."""
    if conf is None or not conf.get("name"):
        raise ConfigError("data.name is missing (valid: " + ", ".join(sorted(DATASETS)) + ")")
    return dataset_class(conf["name"])(conf)
