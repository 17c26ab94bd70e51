"""The homography benchmark hands a line pipeline's matched lines to the `point_line` estimator."""

from __future__ import annotations

import h5py
import numpy as np

from tiepoint.evaluation.benchmarks import Pair, get_benchmark
from tiepoint.evaluation.predictions import pair_key
from tiepoint.evaluation.runner import evaluate_task
from tiepoint.types import MatchResult

from .test_point_line_homography import H_TRUE, SIZE, synthetic


def test_runner_uses_matched_lines_with_point_line(tmp_path):
    rng = np.random.default_rng(5)
    p0, p1, s0, s1, *_ = synthetic(rng, 3, 20, 0.3, 0.0)  # 3 points: too few on their own
    order = rng.permutation(len(s1))  # lines stored in another order, tied by line_matches
    lines1 = np.empty_like(s1)
    lines1[order] = s1
    r = MatchResult(
        p0.astype(np.float32), p1.astype(np.float32), np.stack([np.arange(3)] * 2, 1),
        np.ones(3, np.float32), SIZE, SIZE,
        lines0=s0.astype(np.float32), lines1=lines1.astype(np.float32),
        line_matches=np.stack([np.arange(len(s0)), order], 1), line_scores=np.ones(len(s0)),
    )  # fmt: skip
    pair = Pair("seq/1-2", tmp_path / "a.png", tmp_path / "b.png", H_0to1=H_TRUE)
    bench = get_benchmark("pairs", {"root": str(tmp_path)})
    with h5py.File(tmp_path / "pred.h5", "w") as f:
        r.to_h5(f.create_group(pair_key(pair.name)))
        ev = {"estimator": "point_line", "ransac_th": 2.0, "options": {}}
        res, _ = evaluate_task(bench, "homography", [pair], f, ev, progress=False)
        assert res["H_error_ransac"][0] < 1e-3  # float32 storage of exact data
        ev["estimator"] = "opencv"  # points alone: 3 matches cannot give a homography
        res, _ = evaluate_task(bench, "homography", [pair], f, ev, progress=False)
        assert not np.isfinite(res["H_error_ransac"][0]) or res["H_error_ransac"][0] > 1
