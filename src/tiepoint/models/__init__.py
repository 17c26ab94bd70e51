"""Model registry: short names → classes, imported lazily so `import tiepoint` stays fast.

A name may also be a dotted path `package.module:Class` to plug in a model of your own.
"""

from __future__ import annotations

from ..config import resolve_class

REGISTRY: dict[str, dict[str, str]] = {
    "extractor": {
        "sift": "tiepoint.models.extractors.sift:SIFT",
        "aliked": "tiepoint.models.extractors.aliked:ALIKED",
        "disk": "tiepoint.models.extractors.disk:DISK",
        "xfeat": "tiepoint.models.extractors.xfeat:XFeat",
        "superpoint": "tiepoint.models.extractors.superpoint:SuperPoint",
        "lsd": "tiepoint.models.extractors.lsd:LSD",
        "points_lines": "tiepoint.models.extractors.lsd:PointsAndLines",
        "superpoint+lsd": "tiepoint.models.extractors.lsd:SuperPointLSD",
        "aliked+lsd": "tiepoint.models.extractors.lsd:ALIKEDLSD",
        "disk+lsd": "tiepoint.models.extractors.lsd:DISKLSD",
        "sift+lsd": "tiepoint.models.extractors.lsd:SIFTLSD",
        "xfeat+lsd": "tiepoint.models.extractors.lsd:XFeatLSD",
        "alike": "tiepoint.models.extractors.alike:ALIKE",
        "dedode": "tiepoint.models.extractors.dedode:DeDoDe",
    },
    "matcher": {
        "nearest_neighbor": "tiepoint.models.matchers.nearest_neighbor:NearestNeighborMatcher",
        "lightglue": "tiepoint.models.matchers.lightglue:LightGlue",
        "diffglue": "tiepoint.models.matchers.diffglue:DiffGlue",
        "superglue": "tiepoint.models.matchers.superglue:SuperGlue",
        "reasoning": "tiepoint.models.matchers.reasoning:Reasoning",
        "gluestick": "tiepoint.models.matchers.gluestick:GlueStick",
    },
    "dense": {
        "dkm": "tiepoint.models.dense.dkm:DKM",
        "loftr": "tiepoint.models.dense.loftr:LoFTR",
        "xfeat_star": "tiepoint.models.dense.xfeat_star:XFeatStar",
    },
}


def model_class(kind: str, name: str):
    """A registered model name of `kind` (or `package.module:Class`) → its class."""
    return resolve_class(REGISTRY.get(kind, {}), name, kind)


def get_model(kind: str, conf) -> BaseModel:  # noqa: F821
    """Build a model of `kind` from a config whose `name` picks the class."""
    return model_class(kind, conf["name"])(conf)
