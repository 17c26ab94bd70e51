"""Semantic segmentation used to mask frames (GIM's ADE20K-150 scene parser)."""

from .ade20k import (
    GIM_EXCLUDE,
    SceneParser,
    Segmenter,
    class_ids,
    exclusion_mask,
    load_official,
)
from .classes import ADE20K_CLASSES

__all__ = [
    "ADE20K_CLASSES",
    "GIM_EXCLUDE",
    "SceneParser",
    "Segmenter",
    "class_ids",
    "exclusion_mask",
    "load_official",
]
