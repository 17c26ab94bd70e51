"""The public surface: `Matcher` loads a pipeline once; `match()` is the one-shot form.

A pipeline is either sparse (`extractor` + `matcher`: keypoints of each image, then matches) or
dense (`dense`: a model such as DKM that predicts a warp between two images, from which
`num_matches` matches are sampled). Everything returned is in pixels of the original images
(pixel centres at integer coordinates), whatever resizing the networks needed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from . import hard_pairs, images, runtime
from .errors import ConfigError
from .models import get_model, model_class
from .pipelines import (  # noqa: F401  (list_pipelines, pipeline_weights: public here too)
    DENSE,
    PIPELINE_DEFAULTS,
    _as_overrides,
    is_dense,
    list_pipelines,
    pipeline_conf,
    pipeline_weights,
)
from .tiling import TILE_OVERLAP, extract_tiled
from .types import DenseResult, Features, MatchResult

SAMPLE_SEED = 0  # dense sampling is seeded per pair: the same images give the same matches


def dense_model(conf: DictConfig, weights=None):
    """The dense model of `conf.dense`; with `weights` (a registered name or file) built by the
    class's `from_checkpoint` (DenseMatcher's rule, which a class may extend): a training
    checkpoint brings its architecture, other weights load into `conf`'s. Returns (model, the
    config it was built from)."""
    cls = model_class("dense", conf.name)
    if weights is None:
        return cls(conf), conf
    model = cls.from_checkpoint(weights, conf)
    return model, OmegaConf.create(OmegaConf.to_container(model.conf))


def load_for_dense(image: images.ImageLike, max_size: int | None, side: str = "long"):
    """An image at its own size, shrunk only when its `side` exceeds `max_size` (a dense model
    resizes to its own input size; this only bounds memory). Returns `images.LoadedImage`."""
    name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
    t, size = images.to_tensor(image, name=name, max_size=max_size)
    target = size
    if max_size and (max(size) if side == "long" else min(size)) > max_size:
        target = images.target_size(size, max_size, side)
    t, _ = images.resize_image(t, None, side, size=target)
    scale = np.array([t.shape[-1] / size[0], t.shape[-2] / size[1]])
    return images.LoadedImage(images.gray_to_rgb(t), size, scale)


def matcher_conf_from_checkpoint(weights, matcher_conf: DictConfig) -> DictConfig:
    """The matcher config to build before loading `weights`.

    A training checkpoint (tiepoint or Glue Factory: `{"model": ..., "conf": {"model": {"matcher": ...}}}`)
    carries its architecture: the checkpoint's matcher class (the name may even differ, e.g. a
    DiffGlue checkpoint) builds it, keeping the pipeline's inference-time settings
    (`FeatureMatcher.conf_from_checkpoint`). A plain state dict or a registered name changes nothing
    but that the preset's own weights are not loaded first.
    """
    from . import weights as weights_lib

    cls = model_class("matcher", matcher_conf.name)
    if hasattr(cls, "conf_for_weights"):  # weights that carry their own architecture file
        return cls.conf_for_weights(weights, matcher_conf)
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
    """A pipeline (extractor + matcher, or a dense model), loaded once.

    >>> m = Matcher("aliked+lightglue")
    >>> r = m.match("a.jpg", "b.jpg")

    With a dense pipeline (`Matcher("dkm")`) `match` returns the sampled matches as keypoint
    pairs (keypoint i of image 0 ↔ keypoint i of image 1, score = certainty) and the dense
    prediction in `result.dense`; `extract` and `match_features` do not apply. `weights` loads
    into the matcher, or into the dense model; a training checkpoint brings its architecture.

    `backend="onnxruntime"` runs the ONNX graphs of `onnx_dir` (`tiepoint export onnx`), or of an
    export made on first use and cached (docs/onnx.md); the matcher then runs at fixed depth.
    """

    def __init__(
        self,
        pipeline: str | DictConfig | dict = "aliked+lightglue",
        resize: int | None = None,
        device: str | torch.device | None = None,
        weights: str | os.PathLike | None = None,
        overrides: Iterable[str] | dict | None = None,
        backend: str = "torch",
        onnx_dir: str | os.PathLike | None = None,
    ):
        self.name = pipeline if isinstance(pipeline, str) else "custom"
        self.conf = pipeline_conf(pipeline, overrides)
        self.backend = backend
        self.tile = (None, TILE_OVERLAP)  # `extractor.tile`: set below for torch extractors
        self.autocast_dtype = {"extractor": None, "matcher": None}  # `runtime`: set below
        if backend == "onnxruntime":
            self._load_onnx(pipeline, onnx_dir, overrides, weights)
        elif backend != "torch":
            raise ConfigError(f"unknown backend '{backend}'; valid: torch, onnxruntime")
        if resize is not None:
            self.conf.preprocessing.resize = resize if resize > 0 else None
        if backend == "onnxruntime":
            return
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.extractor = self.matcher = self.dense = None
        run = self.conf.get("runtime")  # precision, compile, keep_memory (runtime.py)
        if self.device.type == "cpu":
            runtime.keep_memory(run)
        self.autocast_dtype = {
            part: runtime.autocast_dtype(run, part, self.device) for part in self.autocast_dtype
        }
        if is_dense(self.conf):
            self.dense, self.conf.dense = dense_model(self.conf.dense, weights)
            self.dense = runtime.maybe_compile(self.dense.eval().to(self.device), run)
            return
        # `extractor.tile` / `tile_overlap`: tiled extraction (tiling.py), for any extractor
        ext_conf = self.conf.extractor.copy()
        self.tile = ext_conf.pop("tile", None), ext_conf.pop("tile_overlap", TILE_OVERLAP)
        self.extractor = get_model("extractor", ext_conf).eval().to(self.device)
        if weights is not None:
            self.conf.matcher = matcher_conf_from_checkpoint(weights, self.conf.matcher)
        self.matcher = get_model("matcher", self.conf.matcher).eval().to(self.device)
        if weights is not None:
            self.matcher.load_weights(weights)
        self.extractor = runtime.maybe_compile(self.extractor, run)

    def _networks(self, part: str = "matcher"):
        """The context a part's networks run in: autocast at its `runtime` precision, or nothing.
        A dense model is a "matcher"."""
        return runtime.autocast(self.autocast_dtype[part], self.device)

    def _load_onnx(self, pipeline, onnx_dir, overrides, weights) -> None:
        from .export.runtime import load

        if weights is not None:
            raise ConfigError("weights= applies to the torch backend; export them to ONNX instead")
        self.extractor, self.matcher, manifest = load(pipeline, onnx_dir, overrides)
        self.conf = OmegaConf.create(manifest["conf"])
        self.device, self.dense = torch.device("cpu"), None

    def _not_dense(self, what: str) -> None:
        if self.dense is not None:
            raise ConfigError(
                f"pipeline '{self.name}' is dense: dense pipelines match images, not features "
                f"({what} does not apply; use match(image0, image1))"
            )

    @torch.inference_mode()
    def extract(
        self, image: images.ImageLike, resize: int | None = None, multiple: int | None = None
    ) -> Features:
        """`resize` (else `preprocessing.resize`; 0: native size), then with `multiple` each side
        floored to a multiple of it (ZEB as GIM runs it: ×8); keypoints in original pixels."""
        self._not_dense("extract")
        pre = self.conf.preprocessing
        resize = pre.resize if resize is None else (resize or None)
        img = images.load(image, resize=resize, side=pre.side, multiple=multiple)
        t = img.tensor.to(self.device)
        t = images.rgb_to_gray(t) if self.extractor.grayscale else images.gray_to_rgb(t)
        with self._networks("extractor"):
            if self.tile[0]:
                pred = extract_tiled(self.extractor, t, int(self.tile[0]), int(self.tile[1]))
            else:
                pred = self.extractor({"image": t})
            refine = getattr(self.matcher, "refine_features", None)
            if refine is not None:  # a per-image refinement (reasoning): cache its descriptors
                pred = {**pred, **refine({**pred, "image": img.tensor.to(self.device)})}
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
        lines = line_scores = None
        if "lines" in pred:  # line extractors (`lsd`, `superpoint+lsd`, ...)
            lines = pred["lines"][0].float().cpu().numpy().reshape(-1, 2)
            lines = images.scale_points(lines, 1.0 / img.scale).astype(np.float32).reshape(-1, 2, 2)
            line_scores = pred["line_scores"][0].float().cpu().numpy()
            if "line_descriptors" in pred:  # GlueStick's endpoint descriptors (L,2,D), an extra
                extra["line_descriptors"] = pred["line_descriptors"][0].float().cpu().numpy()
        return Features(
            keypoints=kpts,
            keypoint_scores=pred["keypoint_scores"][0].float().cpu().numpy(),
            descriptors=pred["descriptors"][0].float().cpu().numpy(),
            image_size=img.original_size,
            extra=extra,
            lines=lines,
            line_scores=line_scores,
        )

    @torch.inference_mode()
    def match_features(self, f0: Features, f1: Features) -> MatchResult:
        self._not_dense("match_features")
        data = {**f0.to_data("0", self.device), **f1.to_data("1", self.device)}
        with self._networks():
            pred = self.matcher(data)
        m0 = pred["matches0"][0].cpu().numpy()
        valid = m0 > -1
        matches = np.stack([np.where(valid)[0], m0[valid]], -1).astype(np.int64)
        scores = pred["matching_scores0"][0].float().cpu().numpy()[valid].astype(np.float32)
        result = MatchResult(
            f0.keypoints, f1.keypoints, matches.reshape(-1, 2), scores, f0.image_size, f1.image_size
        )
        if f0.lines is not None and f1.lines is not None:
            result.lines0, result.lines1 = f0.lines, f1.lines
            if (
                "line_matches0" in pred
            ):  # a line matcher (GlueStick): line_matches0 (B,L0), −1 = none
                lm0 = pred["line_matches0"][0].cpu().numpy()
                ok = lm0 > -1
                result.line_matches = np.stack([np.where(ok)[0], lm0[ok]], -1).astype(np.int64)
                ls = pred.get("line_matching_scores0")
                result.line_scores = (
                    np.ones(int(ok.sum()), np.float32)
                    if ls is None
                    else ls[0].float().cpu().numpy()[ok].astype(np.float32)
                )
        return result

    def extract_many(
        self, images: dict | Iterable, resize: int | None = None, progress: bool = True
    ) -> dict[str, Features]:
        """Features of many images, each extracted once: {name: Features}. `images` is a dict
        name → image, or paths (named by `str(path)`; repeats are extracted once)."""
        self._not_dense("extract_many")
        items = dict(images) if isinstance(images, dict) else {str(p): p for p in images}
        return {
            name: self.extract(image, resize)
            for name, image in tqdm(
                items.items(), desc="extract", unit="image", disable=not progress
            )
        }

    @torch.inference_mode()
    def match_features_batch(self, pairs: list[tuple[Features, Features]]) -> list[MatchResult]:
        """Match several feature pairs in one padded batch when the matcher supports masks
        (`supports_padding`: LightGlue/LighterGlue, adaptive depth and width off), else one by one.
        Equal to `match_features` with adaptivity off, up to float rounding."""
        self._not_dense("match_features_batch")
        if len(pairs) <= 1 or not getattr(self.matcher, "supports_padding", False):
            return [self.match_features(f0, f1) for f0, f1 in pairs]
        from .batching import collate_pairs, split_results

        with self._networks():
            pred = self.matcher(collate_pairs(pairs, self.device))
        return split_results(pred, pairs)

    def match_pairs(
        self,
        pairs: Iterable[tuple],
        features: dict[str, Features] | None = None,
        batch_size: int = 1,
        root: str | os.PathLike | None = None,
        resize: int | None = None,
        progress: bool = True,
    ) -> Iterator[tuple[str, str, MatchResult]]:
        """Match many pairs, yielding `(name0, name1, MatchResult)` in the order given.

        Names are `str(item)`; an image is read from `root / name` (or the item itself). Each image
        is extracted once: from `features` when it holds the name, else on first use — into
        `features` when given (so the caller keeps them), else into a private cache that drops an
        image after its last pair. `batch_size > 1` matches that many pairs per padded batch
        (`match_features_batch`). Dense pipelines match each pair from its images.
        """
        pairs = [(str(a), str(b)) for a, b in pairs]
        source = (lambda n: Path(root) / n) if root is not None else (lambda n: n)
        bar = tqdm(total=len(pairs), desc="match", unit="pair", disable=not progress)
        if self.dense is not None:
            for a, b in pairs:
                yield a, b, self.match_dense(source(a), source(b), resize)
                bar.update()
            bar.close()
            return
        own = features is None
        cache = {} if own else features
        last = {n: i for i, pair in enumerate(pairs) for n in pair}
        step = max(1, batch_size) if getattr(self.matcher, "supports_padding", False) else 1
        for s in range(0, len(pairs), step):
            chunk = pairs[s : s + step]
            names = dict.fromkeys(n for pair in chunk for n in pair)  # first-use order
            for name in names:
                if name not in cache:
                    cache[name] = self.extract(source(name), resize)
            t0 = time.perf_counter()
            results = self.match_features_batch([(cache[a], cache[b]) for a, b in chunk])
            dt = (time.perf_counter() - t0) / len(chunk)
            for (a, b), result in zip(chunk, results, strict=True):
                result.timings = {"match": dt}
                yield a, b, result
            bar.update(len(chunk))
            if own:
                for name in names:
                    if last[name] < s + step:
                        del cache[name]
        bar.close()

    def match(
        self,
        image0: images.ImageLike,
        image1: images.ImageLike,
        resize: int | None = None,
        multiple: int | None = None,
    ) -> MatchResult:
        """`resize` / `multiple` as in `extract`; dense models choose their own input size, so
        `multiple` applies to sparse pipelines only (an error with `hard_pairs`)."""
        if self.dense is not None:
            return self.match_dense(image0, image1, resize)
        if hard_pairs.enabled(self.conf.get("hard_pairs")):
            if multiple:
                raise ConfigError("match(multiple=...) does not apply to hard_pairs pipelines")
            return hard_pairs.match_hard(self, image0, image1, resize)
        t0 = time.perf_counter()
        f0 = self.extract(image0, resize, multiple)
        f1 = self.extract(image1, resize, multiple)
        t1 = time.perf_counter()
        result = self.match_features(f0, f1)
        result.timings = {"extract": t1 - t0, "match": time.perf_counter() - t1}
        return result

    @torch.inference_mode()
    def match_dense(
        self, image0: images.ImageLike, image1: images.ImageLike, resize: int | None = None
    ) -> MatchResult:
        """Dense pipelines: predict the warp, sample `num_matches` from it (seeded), and map the
        samples to original-image pixels. `resize` (else `preprocessing.resize`) only caps the
        size at which the images are loaded; the model resizes to its own input size."""
        from .models.dense.sampling import to_pixel_coordinates

        pre = self.conf.preprocessing
        resize = pre.resize if resize is None else (resize or None)
        t0 = time.perf_counter()
        im0, im1 = (load_for_dense(im, resize, pre.side) for im in (image0, image1))
        t1 = time.perf_counter()
        with self._networks():
            pred = self.dense(
                {"image0": im0.tensor.to(self.device), "image1": im1.tensor.to(self.device)}
            )
        gen = torch.Generator(device=self.device).manual_seed(SAMPLE_SEED)
        m, cert = self.dense.sample(pred, generator=gen)
        m = m.double().cpu().numpy()
        p0, p1 = to_pixel_coordinates(m, im0.original_size, im1.original_size)
        k = len(m)
        return MatchResult(
            p0.astype(np.float32),
            p1.astype(np.float32),
            np.stack([np.arange(k), np.arange(k)], -1).astype(np.int64).reshape(-1, 2),
            cert.float().cpu().numpy(),
            im0.original_size,
            im1.original_size,
            timings={"load": t1 - t0, "match": time.perf_counter() - t1},
            dense=DenseResult(
                pred["warp"][0].float().cpu().numpy(), pred["certainty"][0].float().cpu().numpy()
            )
            if "warp" in pred  # semi-dense models (LoFTR) give matches, no warp
            else None,
        )


_CACHE: dict[tuple, Matcher] = {}


def match(
    image0,
    image1,
    pipeline: str | dict = "aliked+lightglue",
    resize: int | None = None,
    device=None,
    weights=None,
    overrides=None,
) -> MatchResult:
    """One-shot matching; the loaded pipeline is kept for the next call with the same settings."""
    key = (repr(pipeline), str(device), str(weights), repr(overrides))
    if key not in _CACHE:
        _CACHE.clear()
        _CACHE[key] = Matcher(pipeline, device=device, weights=weights, overrides=overrides)
    return _CACHE[key].match(image0, image1, resize=resize)


__all__ = ["Matcher", "MatchResult", "Features", "DenseResult", "match", "list_pipelines"]
