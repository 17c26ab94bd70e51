"""`export_pipeline`: a sparse pipeline as two ONNX graphs, extractor and matcher, plus a manifest.

Exported with `torch.onnx.export(dynamo=True)` (torch.export + onnxscript): our models compute
shapes in Python (`-h % 32` padding, offsets clamped to a quarter of the map size, pixel ↔
normalised coordinates), which torch.export keeps symbolic, so one graph serves every image size.
The TorchScript exporter (`dynamo=False`) bakes those numbers in at the example's size and cannot
export ALIKED's unfold-based NMS with dynamic sizes at all. See docs/onnx.md for the graphs'
inputs and outputs and the fixed-depth matcher.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..atomic import atomic_dir
from ..errors import ConfigError, TiepointError
from .graphs import EXTRACTOR_GRAPHS, LightGlueGraph

EXPORTABLE = ("aliked+lightglue", "disk+lightglue", "xfeat+lighterglue", "superpoint+lightglue")
MANIFEST = "tiepoint_onnx.json"
EXTRACTOR_FILE, MATCHER_FILE = "extractor.onnx", "matcher.onnx"
OPSET = 18
FIXED_DEPTH = {"depth_confidence": -1, "width_confidence": -1}  # no early exit, no pruning
MIN_SIDE, MAX_SIDE = 64, 8192  # image sizes the extractor graph accepts


def export_conf(pipeline, overrides=None):
    """The pipeline config an export (and the torch twin it is compared with) runs: the matcher at
    fixed depth and width. Raises ConfigError for pipelines that have no ONNX form."""
    from ..pipelines import is_dense, pipeline_conf

    conf = pipeline_conf(pipeline, overrides)
    if (
        is_dense(conf)
        or conf.extractor.name not in EXTRACTOR_GRAPHS
        or conf.matcher.name not in ("lightglue",)
    ):
        raise ConfigError(
            f"pipeline '{pipeline}' has no ONNX export; exportable: {', '.join(EXPORTABLE)}"
        )
    conf.matcher = OmegaConf.merge(conf.matcher, FIXED_DEPTH)
    return conf


def conf_key(conf) -> str:
    """A short hash of what determines the graphs: the config and the torch/tiepoint versions."""
    from .._version import __version__

    text = json.dumps(
        [OmegaConf.to_container(conf, resolve=True), torch.__version__, __version__, OPSET],
        sort_keys=True,
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _dims(stride: int, name: str):
    from torch.export import Dim

    if stride == 1:
        return Dim(name, min=MIN_SIDE, max=MAX_SIDE)
    # a multiple of the stride: torch.export then proves the padding arithmetic for every size
    return stride * Dim(f"{name}_cells", min=MIN_SIDE // stride, max=MAX_SIDE // stride)


def _export(module, args, path: Path, input_names, output_names, dynamic_shapes) -> None:
    with torch.inference_mode(False), torch.no_grad():
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            input_names=input_names,
            output_names=output_names,
            dynamic_shapes=dynamic_shapes,
            opset_version=OPSET,
            verbose=False,
        )
    program.save(str(path))


def export_pipeline(pipeline, out: str | os.PathLike, overrides=None) -> Path:
    """Write `out/extractor.onnx`, `out/matcher.onnx` and `out/tiepoint_onnx.json` (atomically:
    `out` appears complete or not at all). Returns `out`."""
    from ..models import get_model

    conf = export_conf(pipeline, overrides)
    try:
        import onnx  # noqa: F401  (the exporter needs it; fail with the install hint)
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise TiepointError(f"ONNX export needs `pip install tiepoint[onnx]` ({e})") from None
    extractor = get_model("extractor", conf.extractor).eval()
    matcher = get_model("matcher", conf.matcher).eval()
    graph = EXTRACTOR_GRAPHS[conf.extractor.name](extractor).eval()
    channels = 1 if extractor.grayscale else 3
    out = Path(out)
    with atomic_dir(out) as tmp:
        image = torch.rand(1, channels, 256, 320)
        if graph.stride == 1:
            args, names = (image,), ["image"]
            shapes = {"image": {2: _dims(1, "height"), 3: _dims(1, "width")}}
        else:
            args, names = (image, torch.tensor([[300, 250]])), ["image", "size"]
            shapes = {
                "image": {2: _dims(graph.stride, "height"), 3: _dims(graph.stride, "width")},
                "size": None,
            }
        outputs = ["keypoints", "keypoint_scores", "descriptors", "count"]
        _export(graph, args, tmp / EXTRACTOR_FILE, names, outputs, shapes)

        from torch.export import Dim

        n0, n1 = Dim("keypoints0", min=2, max=1 << 16), Dim("keypoints1", min=2, max=1 << 16)
        d = int(matcher.conf.input_dim)
        margs = (
            torch.rand(1, 300, 2) * 200,
            torch.rand(1, 280, 2) * 200,
            torch.nn.functional.normalize(torch.randn(1, 300, d), dim=-1),
            torch.nn.functional.normalize(torch.randn(1, 280, d), dim=-1),
            torch.tensor([[200.0, 200.0]]),
            torch.tensor([[200.0, 200.0]]),
        )
        mnames = ["keypoints0", "keypoints1", "descriptors0", "descriptors1"]
        mnames += ["image_size0", "image_size1"]
        mshapes = {
            "kpts0": {1: n0},
            "kpts1": {1: n1},
            "desc0": {1: n0},
            "desc1": {1: n1},
            "size0": None,
            "size1": None,
        }
        _export(
            LightGlueGraph(matcher).eval(),
            margs,
            tmp / MATCHER_FILE,
            mnames,
            ["matches0", "matching_scores0"],
            mshapes,
        )
        manifest = {
            "pipeline": pipeline if isinstance(pipeline, str) else "custom",
            "key": conf_key(conf),
            "conf": OmegaConf.to_container(conf, resolve=True),
            "extractor": {
                "file": EXTRACTOR_FILE,
                "inputs": names,
                "stride": graph.stride,
                "channels": channels,
                "grayscale": bool(extractor.grayscale),
                "max_keypoints": graph.k,
                "min_side": MIN_SIDE,
            },
            "matcher": {"file": MATCHER_FILE, "inputs": mnames, "fixed_depth": True},
            "opset": OPSET,
            "torch": torch.__version__,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    return out
