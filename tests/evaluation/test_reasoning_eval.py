"""`tiepoint eval pairs --pipeline xfeat+reasoning` end to end, with a random-weight release zip in
the official layout and a random DINOv2 (the real ones are not reachable offline), and the
Descriptor Reasoning RANSAC grid (0.5..6 px)."""

import json

import pytest
from helpers import random_reasoning_release

from tiepoint.cli import main
from tiepoint.evaluation.metrics import SWEEP6_THRESHOLDS
from tiepoint.evaluation.run_conf import parse_ransac_th

from .fixtures import write_pairs_dataset


def test_parse_ransac_th():
    assert parse_ransac_th("sweep6") == [0.5 * k for k in range(1, 13)] == list(SWEEP6_THRESHOLDS)
    assert parse_ransac_th("-1") == -1.0 and parse_ransac_th("sweep") == -1.0
    assert parse_ransac_th("1,2.5") == [1.0, 2.5] and parse_ransac_th("2") == 2.0


def test_eval_pairs_xfeat_reasoning_with_the_papers_sweep(tmp_path, capsys):
    root = tmp_path / "data"
    write_pairs_dataset(root, n_h=1, n_pose=2)
    zp = tmp_path / "xfeat.zip"
    random_reasoning_release(zp)
    args = ["eval", "pairs", "--pipeline", "xfeat+reasoning", "--data-root", str(root)]
    args += ["--estimator", "poselib", "--ransac-th", "sweep6", "--tag", "dr"]
    args += ["--output-dir", str(tmp_path / "out")]
    args += [f"matcher.weights={zp}", "matcher.dino_weights=null", "matcher.long_side=112"]
    args += ["extractor.max_num_keypoints=256", "data.resize=320"]
    assert main(args) == 0, capsys.readouterr().err
    summ = json.loads(
        (tmp_path / "out" / "results" / "pairs" / "dr" / "summaries.json").read_text()
    )
    flat = json.dumps(summ)
    assert "ransac_th" in flat
    ths = [v for k, v in _items(summ) if k.endswith("ransac_th")]
    assert ths and all(t in SWEEP6_THRESHOLDS for t in ths)
    nm = [v for k, v in _items(summ) if k.endswith("mnum_matches")]
    assert nm and all(v > 0 for v in nm)  # random head, but mutual NN still matches


def _items(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _items(v, f"{prefix}{k}/")
        else:
            yield f"{prefix}{k}", v


@pytest.mark.parametrize("bench", ["scannet1500", "megadepth1500"])
def test_benchmarks_accept_the_reasoning_pipeline(bench, tmp_path):
    from tiepoint.evaluation.run_conf import build_conf

    conf = build_conf(bench, "xfeat+reasoning", "poselib", "sweep6", ["matcher.dino_weights=null"])
    assert conf.eval["ransac_th"] == list(SWEEP6_THRESHOLDS)
    assert conf.model["matcher"]["name"] == "reasoning"
