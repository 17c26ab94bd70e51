"""onnxruntime behind the torch model interface: `OnnxExtractor` and `OnnxMatcher` take and return
the same dicts of torch tensors as the models they replace, so `Matcher(..., backend="onnxruntime")`
keeps its own pre- and post-processing (resizing, pixel mapping, MatchResult) unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import ConfigError, ImageError, WeightsError
from .onnx import MANIFEST, conf_key, export_conf, export_pipeline


def _session(path: Path, threads: int | None):
    try:
        import onnxruntime as ort
    except ImportError:
        raise WeightsError(
            "the onnxruntime backend needs `pip install tiepoint[onnx]` (onnxruntime missing)"
        ) from None
    if not path.is_file():
        raise WeightsError(f"{path}: ONNX file not found (export with `tiepoint export onnx`)")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own (Fail, InvalidProtobuf, ...) types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not a loadable ONNX model ({first[:200]})") from None


def read_manifest(onnx_dir: Path) -> dict:
    path = Path(onnx_dir) / MANIFEST
    if not path.is_file():
        raise WeightsError(f"{path}: manifest not found (not a `tiepoint export onnx` folder)")
    try:
        manifest = json.loads(path.read_text())
        manifest["extractor"]["file"], manifest["matcher"]["file"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise WeightsError(f"{path}: not a tiepoint ONNX manifest ({e})") from None
    return manifest


class OnnxExtractor:
    """The extractor graph: pads the image as the graph expects, keeps the first `count` outputs."""

    def __init__(self, onnx_dir: Path, manifest: dict, threads: int | None = None):
        info = manifest["extractor"]
        self.path = Path(onnx_dir) / info["file"]
        self.session = _session(self.path, threads)
        self.stride, self.inputs = int(info["stride"]), list(info["inputs"])
        self.grayscale = bool(info["grayscale"])
        self.min_side = int(info.get("min_side", 64))

    def __call__(self, data: dict) -> dict:
        image = data["image"].float().cpu().numpy()
        h, w = image.shape[-2:]
        if image.shape[0] != 1:
            raise ImageError(f"{self.path.name}: one image at a time, got a batch of {len(image)}")
        if min(h, w) < self.min_side:
            raise ImageError(f"{self.path.name}: image {w}×{h} is below {self.min_side} px")
        feeds = {"image": image}
        if "size" in self.inputs:
            s = self.stride
            image = np.pad(image, ((0, 0), (0, 0), (0, -h % s), (0, -w % s)))
            feeds = {"image": image, "size": np.array([[w, h]], dtype=np.int64)}
        kpts, scores, desc, count = self.session.run(None, feeds)
        n = int(count[0])
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a[:, :n]))
        return {"keypoints": t(kpts), "keypoint_scores": t(scores), "descriptors": t(desc)}


class OnnxMatcher:
    """The fixed-depth LightGlue graph; empty keypoint sets are answered without running it."""

    def __init__(self, onnx_dir: Path, manifest: dict, threads: int | None = None):
        self.path = Path(onnx_dir) / manifest["matcher"]["file"]
        self.session = _session(self.path, threads)

    def __call__(self, data: dict) -> dict:
        k0, k1 = data["keypoints0"], data["keypoints1"]
        m, n = k0.shape[1], k1.shape[1]
        if m < 2 or n < 2:  # the graph is exported for ≥ 2 keypoints; 0/1 keypoints: no matches
            return {
                "matches0": torch.full((1, m), -1, dtype=torch.long),
                "matching_scores0": torch.zeros(1, m),
            }
        np_ = lambda x: x.float().cpu().numpy()
        feeds = {
            "keypoints0": np_(k0),
            "keypoints1": np_(k1),
            "descriptors0": np_(data["descriptors0"]),
            "descriptors1": np_(data["descriptors1"]),
            "image_size0": np_(data["image_size0"]).reshape(1, 2),
            "image_size1": np_(data["image_size1"]).reshape(1, 2),
        }
        m0, s0 = self.session.run(None, feeds)
        return {"matches0": torch.from_numpy(m0), "matching_scores0": torch.from_numpy(s0)}


def default_dir(pipeline, overrides=None) -> Path:
    """Where `Matcher(..., backend="onnxruntime")` keeps its export when given no folder."""
    from ..weights import home

    name = pipeline if isinstance(pipeline, str) else "custom"
    return home() / "onnx" / f"{name}-{conf_key(export_conf(pipeline, overrides))}"


def load(pipeline, onnx_dir=None, overrides=None, threads=None):
    """(OnnxExtractor, OnnxMatcher, manifest) of `onnx_dir`; without one, of the cached export of
    `pipeline` (made on first use: slow once, written atomically)."""
    if onnx_dir is None:
        onnx_dir = default_dir(pipeline, overrides)
        if not (onnx_dir / MANIFEST).is_file():
            export_pipeline(pipeline, onnx_dir, overrides)
    elif overrides:
        raise ConfigError(
            f"{onnx_dir}: overrides are baked into an export; export with them instead "
            "(tiepoint export onnx --pipeline P OUT key=value ...)"
        )
    onnx_dir = Path(os.fspath(onnx_dir))
    manifest = read_manifest(onnx_dir)
    if isinstance(pipeline, str) and manifest.get("pipeline") not in (pipeline, "custom"):
        raise ConfigError(
            f"{onnx_dir}: an export of '{manifest.get('pipeline')}', not of '{pipeline}'"
        )
    return (
        OnnxExtractor(onnx_dir, manifest, threads),
        OnnxMatcher(onnx_dir, manifest, threads),
        manifest,
    )
