"""The public surface: `Matcher` loads a pipeline once; `match()` is the one-shot form.

Everything returned is in pixels of the original images (pixel centres at integer coordinates),
whatever resizing the networks needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from . import images
from .config import load_preset, merge_strict, parse_dotlist
from .errors import ConfigError
from .models import get_model
from .types import Features, MatchResult

PIPELINE_DEFAULTS = {
    "preprocessing": {"resize": 1024, "side": "long"},
    "extractor": {},
    "matcher": {},
}


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
    conf = OmegaConf.merge(PIPELINE_DEFAULTS, base, _as_overrides(overrides) or {})
    unknown = set(conf) - set(PIPELINE_DEFAULTS)
    if unknown:
        raise ConfigError(
            f"unknown pipeline section(s) {sorted(unknown)}; valid: {sorted(PIPELINE_DEFAULTS)}"
        )
    conf.preprocessing = merge_strict(
        PIPELINE_DEFAULTS["preprocessing"], conf.preprocessing, where="preprocessing"
    )
    for section in ("extractor", "matcher"):
        if not conf[section].get("name"):
            raise ConfigError(f"pipeline has no {section}.name")
    return conf


def matcher_conf_from_checkpoint(weights, matcher_conf: DictConfig) -> DictConfig:
    """The matcher config to build before loading `weights`.

    A training checkpoint (tiepoint or Glue Factory: `{"model": ..., "conf": {"model": {"matcher": ...}}}`)
    carries its architecture: the checkpoint's matcher class (the name may even differ, e.g. a
    DiffGlue checkpoint) builds it, keeping the pipeline's inference-time settings
    (`FeatureMatcher.conf_from_checkpoint`). A plain state dict or a registered name changes nothing
    but that the preset's own weights are not loaded first.
    """
    from . import weights as weights_lib
    from .models import model_class

    cls = model_class("matcher", matcher_conf.name)
    path = Path(weights)
    state = weights_lib.load_state_dict(path) if path.is_file() else None
    trained = (
        ((state.get("conf") or {}).get("model") or {}).get("matcher")
        if isinstance(state, dict)
        else None
    )
    if not isinstance(trained, dict):
        return cls.without_own_weights(matcher_conf)
    name = str(trained.get("name") or matcher_conf.name).removeprefix("matchers.")
    trained_cls = model_class("matcher", name)
    inference = matcher_conf if trained_cls is cls else {}
    return trained_cls.conf_from_checkpoint({**trained, "name": name}, inference)


class Matcher:
    """Extractor + matcher, loaded once.

    >>> m = Matcher("aliked+lightglue")
    >>> r = m.match("a.jpg", "b.jpg")
    """

    def __init__(
        self,
        pipeline: str | DictConfig | dict = "aliked+lightglue",
        resize: int | None = None,
        device: str | torch.device | None = None,
        weights: str | os.PathLike | None = None,
        overrides: Iterable[str] | dict | None = None,
    ):
        self.name = pipeline if isinstance(pipeline, str) else "custom"
        self.conf = pipeline_conf(pipeline, overrides)
        if resize is not None:
            self.conf.preprocessing.resize = resize if resize > 0 else None
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.extractor = get_model("extractor", self.conf.extractor).eval().to(self.device)
        if weights is not None:
            self.conf.matcher = matcher_conf_from_checkpoint(weights, self.conf.matcher)
        self.matcher = get_model("matcher", self.conf.matcher).eval().to(self.device)
        if weights is not None:
            self.matcher.load_weights(weights)

    @torch.inference_mode()
    def extract(self, image: images.ImageLike, resize: int | None = None) -> Features:
        pre = self.conf.preprocessing
        resize = pre.resize if resize is None else (resize or None)
        img = images.load(image, resize=resize, side=pre.side)
        t = img.tensor.to(self.device)
        t = images.rgb_to_gray(t) if self.extractor.grayscale else images.gray_to_rgb(t)
        pred = self.extractor({"image": t})
        kpts = images.scale_points(
            pred["keypoints"][0].float().cpu().numpy(), 1.0 / img.scale
        ).astype(np.float32)
        extra = {}
        if "scales" in pred:
            extra["scales"] = (pred["scales"][0].cpu().numpy() / img.scale.mean()).astype(
                np.float32
            )
        if "oris" in pred:
            extra["oris"] = pred["oris"][0].cpu().numpy().astype(np.float32)
        return Features(
            keypoints=kpts,
            keypoint_scores=pred["keypoint_scores"][0].float().cpu().numpy(),
            descriptors=pred["descriptors"][0].float().cpu().numpy(),
            image_size=img.original_size,
            extra=extra,
        )

    @torch.inference_mode()
    def match_features(self, f0: Features, f1: Features) -> MatchResult:
        data = {**f0.to_data("0", self.device), **f1.to_data("1", self.device)}
        pred = self.matcher(data)
        m0 = pred["matches0"][0].cpu().numpy()
        valid = m0 > -1
        matches = np.stack([np.where(valid)[0], m0[valid]], -1).astype(np.int64)
        scores = pred["matching_scores0"][0].cpu().numpy()[valid].astype(np.float32)
        return MatchResult(
            f0.keypoints, f1.keypoints, matches.reshape(-1, 2), scores, f0.image_size, f1.image_size
        )

    def match(
        self, image0: images.ImageLike, image1: images.ImageLike, resize: int | None = None
    ) -> MatchResult:
        t0 = time.perf_counter()
        f0 = self.extract(image0, resize)
        f1 = self.extract(image1, resize)
        t1 = time.perf_counter()
        result = self.match_features(f0, f1)
        result.timings = {"extract": t1 - t0, "match": time.perf_counter() - t1}
        return result


_CACHE: dict[tuple, Matcher] = {}


def match(
    image0,
    image1,
    pipeline: str = "aliked+lightglue",
    resize: int | None = None,
    device=None,
    weights=None,
    overrides=None,
) -> MatchResult:
    """One-shot matching; the loaded pipeline is kept for the next call with the same settings."""
    key = (pipeline, str(device), str(weights), repr(overrides))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Matcher(pipeline, device=device, weights=weights, overrides=overrides)
    return _CACHE[key].match(image0, image1, resize=resize)


def list_pipelines() -> list[str]:
    from .config import packaged_names

    return packaged_names("pipelines")


def pipeline_weights(pipeline: str) -> list[str]:
    """Registered weight names a pipeline needs (for `tiepoint models`), as its classes say."""
    from .models import model_class

    conf = pipeline_conf(pipeline)
    return [
        name
        for kind in ("extractor", "matcher")
        for name in model_class(kind, conf[kind].name).weight_names(conf[kind])
    ]


__all__ = ["Matcher", "MatchResult", "Features", "match", "list_pipelines"]
