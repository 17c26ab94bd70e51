"""tiepoint: local image feature matching — match, train, evaluate, reconstruct."""

from ._version import __version__
from .api import Matcher, list_pipelines, match
from .errors import (
    ConfigError,
    DatasetError,
    EstimatorError,
    ImageError,
    TiepointError,
    WeightsError,
)
from .types import DenseResult, Features, MatchResult

__all__ = [
    "__version__",
    "match",
    "Matcher",
    "MatchResult",
    "DenseResult",
    "Features",
    "list_pipelines",
    "TiepointError",
    "ImageError",
    "WeightsError",
    "ConfigError",
    "DatasetError",
    "EstimatorError",
]
