"""The Match tab's logic: pipelines and their weights, a cache of matches, estimators on top.

A `MatchResult` is cached per (pair of image contents, pipeline, knobs); changing the estimator
or its threshold re-runs only the estimator on the cached matches. `runs` counts how often a
pipeline actually matched, so the page (and the tests) can show that nothing was re-matched.
"""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, EstimatorError, WeightsError
from ..types import MatchResult

HOMOGRAPHY, FUNDAMENTAL, ESSENTIAL = "homography", "fundamental", "essential"
ESTIMATORS = ("opencv", "poselib", "pycolmap")


def geometry_models() -> list[str]:
    """Models the page offers: the fundamental matrix only where `MatchResult` can estimate it."""
    out = [HOMOGRAPHY, ESSENTIAL]
    if callable(getattr(MatchResult, "fundamental", None)):
        out.insert(1, FUNDAMENTAL)
    return out


@dataclass(frozen=True)
class Knobs:
    """The settings that change the matches (and so key the cache). None: the pipeline's own."""

    resize: int | None = None
    max_keypoints: int | None = None
    filter_threshold: float | None = None


@dataclass
class PipelineStatus:
    name: str
    dense: bool
    weights: dict[str, bool]  # registered weight name → present in the cache
    error: str | None = None  # the model's code or a dependency is missing

    @property
    def ready(self) -> bool:
        return self.error is None and all(self.weights.values())

    def label(self) -> str:
        if self.error:
            return f"{self.name} (unavailable)"
        missing = [w for w, ok in self.weights.items() if not ok]
        return f"{self.name} (missing weights)" if missing else self.name

    def problem(self) -> str | None:
        """One line saying why the pipeline cannot run here, or None."""
        if self.error:
            return f"{self.name}: unavailable here ({self.error})"
        missing = [w for w, ok in self.weights.items() if not ok]
        if missing:
            return (
                f"{self.name}: weights {', '.join(missing)} not in the cache; fetch them with "
                f"`tiepoint weights fetch {' '.join(missing)}` (or `tiepoint weights place NAME FILE`)"
            )
        return None


def pipeline_status(name: str) -> PipelineStatus:
    from .. import weights
    from ..api import is_dense, pipeline_conf, pipeline_weights

    try:
        needed = pipeline_weights(name)
        dense = is_dense(pipeline_conf(name))
    except (ImportError, ConfigError) as e:
        return PipelineStatus(name, False, {}, str(e))
    return PipelineStatus(name, dense, {w: weights.is_cached(w) for w in needed})


def all_pipelines() -> list[PipelineStatus]:
    from ..api import list_pipelines

    return [pipeline_status(n) for n in list_pipelines()]


def overrides_for(pipeline: str, knobs: Knobs) -> list[str]:
    """Dotted overrides that apply the knobs, only where the pipeline's models have the setting."""
    from ..api import is_dense, pipeline_conf
    from ..models import model_class

    conf = pipeline_conf(pipeline)
    out = []
    if is_dense(conf):
        if knobs.max_keypoints:
            out.append(f"dense.num_matches={int(knobs.max_keypoints)}")
        return out
    ext = model_class("extractor", conf.extractor.name).full_default_conf()
    mat = model_class("matcher", conf.matcher.name).full_default_conf()
    if knobs.max_keypoints and "max_num_keypoints" in ext:
        out.append(f"extractor.max_num_keypoints={int(knobs.max_keypoints)}")
    if knobs.filter_threshold is not None and "filter_threshold" in mat:
        out.append(f"matcher.filter_threshold={float(knobs.filter_threshold)}")
    return out


def file_digest(path: str | Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


@dataclass
class Estimate:
    model: str
    estimator: str
    threshold: float | None
    matrix: np.ndarray | None  # H, F or E-derived [R|t]; None on failure
    inliers: np.ndarray  # (K,) bool
    seconds: float
    note: str = ""

    @property
    def num_inliers(self) -> int:
        return int(self.inliers.sum())


def parse_intrinsics(text: str, name: str) -> np.ndarray:
    """'fx fy cx cy' (spaces or commas) → 3×3 K."""
    try:
        v = [float(x) for x in (text or "").replace(",", " ").split()]
    except ValueError:
        v = []
    if len(v) != 4:
        raise EstimatorError(f"{name}: give the intrinsics as 'fx fy cx cy' (got '{text}')")
    fx, fy, cx, cy = v
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def estimate(
    result: MatchResult,
    model: str = HOMOGRAPHY,
    estimator: str = "opencv",
    threshold: float | None = None,
    K0: np.ndarray | None = None,
    K1: np.ndarray | None = None,
) -> Estimate:
    """The chosen geometric model on the matches; too few matches give an empty inlier set."""
    t = time.perf_counter()
    note = ""
    if model == HOMOGRAPHY:
        M, inl = result.homography(estimator=estimator, threshold=threshold)
    elif model == ESSENTIAL:
        if K0 is None or K1 is None:
            raise EstimatorError("the essential matrix needs the intrinsics of both images")
        R, tr, inl = result.relative_pose(K0, K1, estimator=estimator, threshold=threshold)
        M = None if R is None else np.concatenate([R, np.reshape(tr, (3, 1))], 1)
    elif model == FUNDAMENTAL and FUNDAMENTAL in geometry_models():
        out = result.fundamental(estimator=estimator, threshold=threshold)
        M, inl = out[0], out[-1]
    else:
        raise EstimatorError(f"unknown geometric model '{model}'; valid: {geometry_models()}")
    inl = np.zeros(len(result), bool) if inl is None else np.asarray(inl, bool).reshape(-1)
    if M is None:
        note = f"{estimator} found no {model}"
    return Estimate(model, estimator, threshold, M, inl, time.perf_counter() - t, note)


@dataclass
class MatchSession:
    """Loaded pipelines and cached matches, shared by all page callbacks of one server."""

    device: str | None = None
    max_cached: int = 32
    runs: int = 0  # pipeline runs (cache misses)
    cache: OrderedDict = field(default_factory=OrderedDict)
    matchers: OrderedDict = field(default_factory=OrderedDict)

    def matcher(self, pipeline: str, knobs: Knobs):
        from ..api import Matcher

        status = pipeline_status(pipeline)
        if status.problem():
            raise WeightsError(status.problem())
        key = (pipeline, tuple(overrides_for(pipeline, knobs)))
        if key not in self.matchers:
            while len(self.matchers) >= 3:  # keep memory bounded: a few loaded models at most
                self.matchers.popitem(last=False)
            self.matchers[key] = Matcher(
                pipeline, device=self.device, overrides=list(key[1]) or None
            )
        self.matchers.move_to_end(key)
        return self.matchers[key]

    def match(
        self, image0: Path, image1: Path, pipeline: str, knobs: Knobs = Knobs()
    ) -> tuple[MatchResult, bool]:
        """(result, whether it came from the cache)."""
        key = (file_digest(image0), file_digest(image1), pipeline, knobs)
        if key in self.cache:
            self.cache.move_to_end(key)
            return self.cache[key], True
        m = self.matcher(pipeline, knobs)
        result = m.match(image0, image1, resize=knobs.resize)
        self.runs += 1
        self.cache[key] = result
        if len(self.cache) > self.max_cached:
            self.cache.popitem(last=False)
        return result, False


def counts_row(pipeline: str, result: MatchResult, est: Estimate | None, cached: bool) -> dict:
    """The numbers the page shows for one pipeline on one pair."""
    n = len(result)
    inl = est.num_inliers if est is not None else None
    return {
        "pipeline": pipeline,
        "keypoints0": len(result.keypoints0),
        "keypoints1": len(result.keypoints1),
        "matches": n,
        "inliers": inl,
        "inlier_ratio": round(inl / n, 3) if (n and inl is not None) else 0.0,
        "match_s": round(sum(result.timings.values()), 3),
        "estimate_s": round(est.seconds, 4) if est is not None else None,
        "cached": cached,
    }
