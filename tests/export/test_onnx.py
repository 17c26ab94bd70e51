"""ONNX export and the onnxruntime backend: the same matches as torch, clear errors for bad files.

The parity tests export each pipeline once into the tiepoint cache (`Matcher(p,
backend="onnxruntime")` without `onnx_dir`: the export-on-first-use path; about a minute per
pipeline on two cores) and reuse it afterwards; the truth they compare with is the torch pipeline
at the same fixed depth, on real pairs of two sizes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import unavailable

from tiepoint import Matcher, MatchResult
from tiepoint.cli import main
from tiepoint.errors import ConfigError, WeightsError

pytest.importorskip("torch")
PIPELINES = {  # pipeline → weight names
    "aliked+lightglue": ("aliked-n16", "aliked_lightglue"),
    "disk+lightglue": ("disk-depth", "disk_lightglue"),
    "xfeat+lighterglue": ("xfeat", "xfeat-lighterglue"),
    "superpoint+lightglue": ("superpoint", "superpoint_lightglue"),
}
PAIRS = [("oxford_boat", "img1.png", "img3.png"), ("oxford_bikes", "img1.png", "img3.png")]
RESIZE = 512  # boat → 512×410, bikes → 512×358: one graph must serve both sizes


def _onnx_modules():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        unavailable(f"the onnx extra is not installed ({e}): pip install tiepoint[onnx]")


def _match_keys(r: MatchResult) -> set:
    """Matches as coordinate pairs (0.1 px): the two backends may order equal-score keypoints
    differently, so indices are not comparable, positions are."""
    m = r.matches
    xy = np.concatenate([r.keypoints0[m[:, 0]], r.keypoints1[m[:, 1]]], 1)
    return set(map(tuple, np.round(xy, 1)))


# disk+lightglue and superpoint+lightglue export the same way; their parity is recorded by
# benchmarks/match_speed.py --onnx (docs/onnx.md) — two pipelines keep the suite's time in bounds
@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["aliked+lightglue", "xfeat+lighterglue"])
def test_onnxruntime_matches_equal_torch_at_fixed_depth(pipeline, data_dir, official_weights):
    _onnx_modules()
    official_weights(*PIPELINES[pipeline])
    fixed = ["matcher.depth_confidence=-1", "matcher.width_confidence=-1"]
    torch_m = Matcher(pipeline, resize=RESIZE, device="cpu", overrides=fixed)
    onnx_m = Matcher(pipeline, resize=RESIZE, backend="onnxruntime")
    graph, sizes = onnx_m.extractor, set()

    def recording(data):  # the image sizes the extractor graph is run on
        sizes.add(tuple(data["image"].shape[-2:]))
        return graph(data)

    recording.grayscale = graph.grayscale
    onnx_m.extractor = recording
    for seq, a, b in PAIRS:
        im0, im1 = data_dir / "homography" / seq / a, data_dir / "homography" / seq / b
        rt, ro = torch_m.match(im0, im1), onnx_m.match(im0, im1)
        assert isinstance(ro, MatchResult) and ro.image_size0 == rt.image_size0
        kt, ko = (set(map(tuple, np.round(r.keypoints0, 1))) for r in (rt, ro))
        assert len(kt & ko) >= 0.99 * len(kt), f"{seq}: keypoints {len(kt & ko)}/{len(kt)}"
        st, so = _match_keys(rt), _match_keys(ro)
        assert len(st) > 100, f"{seq}: only {len(st)} torch matches"
        same = len(st & so)
        assert same >= 0.99 * max(len(st), len(so)), f"{seq}: {same} of {len(st)}/{len(so)} equal"
    assert len(sizes) == 2, sizes  # two image sizes through one graph
    assert isinstance(graph.session.get_inputs()[0].shape[2], str)  # a symbolic height


def _fake_export(tmp_path, extractor_bytes: bytes | None, manifest: dict | None = None):
    d = tmp_path / "onnx"
    d.mkdir()
    manifest = manifest or {
        "pipeline": "aliked+lightglue",
        "conf": {},
        "extractor": {
            "file": "extractor.onnx",
            "inputs": ["image"],
            "stride": 1,
            "channels": 3,
            "grayscale": False,
            "max_keypoints": 8,
        },
        "matcher": {"file": "matcher.onnx", "inputs": []},
    }
    (d / "tiepoint_onnx.json").write_text(json.dumps(manifest))
    if extractor_bytes is not None:
        (d / "extractor.onnx").write_bytes(extractor_bytes)
    return d


def test_missing_onnx_file_is_one_line_error(tmp_path):
    pytest.importorskip("onnxruntime")
    d = _fake_export(tmp_path, None)
    with pytest.raises(WeightsError, match="extractor.onnx: ONNX file not found") as e:
        Matcher("aliked+lightglue", backend="onnxruntime", onnx_dir=d)
    assert "\n" not in str(e.value)


def test_corrupt_onnx_file_is_one_line_error(tmp_path):
    pytest.importorskip("onnxruntime")
    d = _fake_export(tmp_path, b"\x08\x07 this is not a protobuf model \xff" * 10)
    with pytest.raises(WeightsError, match="extractor.onnx: not a loadable ONNX model") as e:
        Matcher("aliked+lightglue", backend="onnxruntime", onnx_dir=d)
    assert "\n" not in str(e.value) and str(d) in str(e.value)


def test_export_of_another_pipeline_or_overrides_refused(tmp_path):
    d = _fake_export(tmp_path, None)
    with pytest.raises(ConfigError, match="an export of 'aliked\\+lightglue', not of 'disk"):
        Matcher("disk+lightglue", backend="onnxruntime", onnx_dir=d)
    with pytest.raises(ConfigError, match="overrides are baked into an export"):
        Matcher("aliked+lightglue", backend="onnxruntime", onnx_dir=d, overrides=["matcher.x=1"])


def test_missing_or_bad_manifest(tmp_path):
    with pytest.raises(WeightsError, match="manifest not found"):
        Matcher("aliked+lightglue", backend="onnxruntime", onnx_dir=tmp_path)
    (tmp_path / "tiepoint_onnx.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not a tiepoint ONNX manifest"):
        Matcher("aliked+lightglue", backend="onnxruntime", onnx_dir=tmp_path)


def test_unknown_backend_and_unexportable_pipeline(tmp_path, capsys):
    with pytest.raises(ConfigError, match="unknown backend 'tensorrt'"):
        Matcher("aliked+lightglue", backend="tensorrt")
    from tiepoint.export.onnx import export_pipeline

    with pytest.raises(ConfigError, match="has no ONNX export"):
        export_pipeline("sift+nn", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the CLI offers the exportable pipelines only, and says so in one line
    with pytest.raises(SystemExit):
        main(["export", "onnx", str(tmp_path / "o"), "--pipeline", "dkm"])
    assert "invalid choice: 'dkm'" in capsys.readouterr().err
