"""Dense pipelines in the benchmark runner, through the oracle dense model (tests/dense_oracle.py)
that outputs the exact warp of each pair's ground-truth homography: matched per pair (no feature
cache), stored in the usual predictions layout, resumable, and evaluated like sparse ones."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from dense_oracle import oracle_pipeline
from PIL import Image

import tiepoint
from tiepoint.evaluation.benchmarks import get_benchmark
from tiepoint.evaluation.runner import run

# the pipeline the runner resolves and records; the factory below swaps in each pair's true H
PIPELINE = oracle_pipeline(np.eye(3), (1, 1), (1, 1), num_matches=400)
OVERRIDES = ["data.tasks=[homography]", "data.max_pairs=4", "data.resize=600"]


class PerPairOracle:
    """A dense 'matcher' that builds the oracle of each pair's GT homography, keeping the
    pipeline config the runner resolved (load-size cap included); only `match` exists."""

    def __init__(self, conf, truth, crash_after=None):
        self.conf, self.truth, self.crash_after = conf, truth, crash_after
        self.pairs, self.loaded = 0, []

    def match(self, path0, path1):
        if self.crash_after is not None and self.pairs >= self.crash_after:
            raise KeyboardInterrupt("simulated crash")
        self.pairs += 1
        H = self.truth[(str(path0), str(path1))]
        sizes = [Image.open(p).size for p in (path0, path1)]
        pipe = oracle_pipeline(H, *sizes, num_matches=self.conf["dense"]["num_matches"])
        pipe["preprocessing"] = self.conf["preprocessing"]
        m = tiepoint.Matcher(pipe, device="cpu")
        r = m.match(path0, path1)
        self.loaded += [max(s[-2:]) for s in m.dense.inputs]
        return r


@pytest.fixture(scope="module")
def truth(data_dir):
    bench = get_benchmark("pairs", {"root": str(data_dir), "tasks": ["homography"]})
    return {(str(p.image0), str(p.image1)): p.H_0to1 for p in bench.load_pairs()}


def _run(data_dir, out, truth, crash_after=None, overrides=OVERRIDES):
    made = []

    def make(conf):
        made.append(PerPairOracle(conf, truth, crash_after))
        return made[-1]

    summ, d = run(
        "pairs",
        PIPELINE,
        output_dir=out,
        data_root=data_dir,
        overrides=overrides,
        progress=False,
        matcher_factory=make,
    )
    return summ, d, made


def test_dense_pipeline_is_evaluated_per_pair_and_resumes(data_dir, truth, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        _run(data_dir, tmp_path, truth, crash_after=2)
    summ, d, made = _run(data_dir, tmp_path, truth)
    assert made[0].pairs == 2  # the 2 pairs done before the crash were not matched again
    assert made[0].loaded and max(made[0].loaded) <= 600  # the benchmark's resize reached it
    # the oracle is exact: every pair's RANSAC homography within a fraction of a pixel
    assert summ["H_error_ransac@3px"] > 0.99 and summ["H_error_dlt@3px"] > 0.99
    assert summ["mprec@3px"] == 1.0 and summ["mnum_matches"] == 400
    with h5py.File(d / "predictions.h5") as f:
        assert len(f) == 4 and all(g.attrs["done"] for g in f.values())
        assert not any("dense" in g for g in f.values())  # the warp is not stored by default
    # a third run finds everything done: no model is built
    _, _, made = _run(data_dir, tmp_path, truth)
    assert made == []


def test_store_dense_keeps_the_warp(data_dir, truth, tmp_path):
    ov = [*OVERRIDES[:1], "data.max_pairs=1", "eval.store_dense=true"]
    _, d, _ = _run(data_dir, tmp_path, truth, overrides=ov)
    with h5py.File(d / "predictions.h5") as f:
        (g,) = f.values()
        assert g["dense/warp"].shape == (60, 160, 4)


# ---- DKM's protocol (evaluation/dkm_protocol.py) ----------------------------------------------


def test_dkm_hpatches_error_is_the_corner_shift_at_480px():
    from tiepoint.evaluation.dkm_protocol import hpatches_error

    rng = np.random.default_rng(0)
    size = (1280, 960)  # short side 960: errors are halved at 480 px
    H = np.array([[1.1, 0.05, 20.0], [-0.02, 0.95, 10.0], [1e-5, 0, 1]])
    p0 = rng.uniform(0, 900, (500, 2))
    p1 = (np.c_[p0, np.ones(500)] @ H.T)[:, :2] / (np.c_[p0, np.ones(500)] @ H.T)[:, 2:]
    assert hpatches_error(p0, p1, H, size, size) < 1e-3
    # every match shifted by 4 px: the estimate is H then the shift, 4 px at every corner
    assert abs(hpatches_error(p0, p1 + [4, 0], H, size, size) - 2.0) < 1e-3
    assert hpatches_error(p0[:3], p1[:3], H, size, size) > 100  # no estimate: DKM's fallback


def test_dkm_megadepth_errors_five_runs_on_exact_matches():
    from helpers import rotation

    from tiepoint.evaluation.dkm_protocol import megadepth_errors

    rng = np.random.default_rng(0)
    K = np.array([[800.0, 0, 799.5], [0, 800, 599.5], [0, 0, 1]])
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = rotation(2, -5, 1), [0.5, 0.05, 0.1]
    X = np.c_[rng.uniform(-3, 3, (400, 2)), rng.uniform(4, 9, 400)]
    x0 = X @ K.T
    X1 = X @ T[:3, :3].T + T[:3, 3]
    x1 = X1 @ K.T
    p0, p1 = x0[:, :2] / x0[:, 2:], x1[:, :2] / x1[:, 2:]
    errs = megadepth_errors(p0, p1, K, K, T, (1600, 1200), (1600, 1200), rng)
    assert len(errs) == 5 and max(errs) < 0.1
    assert megadepth_errors(p0[:4], p1[:4], K, K, T, (1600, 1200), (1600, 1200), rng) == [90] * 5


@pytest.fixture(scope="module")
def mini_hpatches(data_dir, tmp_path_factory):
    """The shared graffiti sequence in HPatches' own layout (.ppm)."""
    src = data_dir / "homography" / "hpatches_v_graffiti"
    seq = tmp_path_factory.mktemp("hpatches") / "v_graffiti"
    seq.mkdir()
    for k in range(1, 7):
        Image.open(src / f"{k}.png").save(seq / f"{k}.ppm")
        if k > 1:
            (seq / f"H_1_{k}").write_text((src / f"H_1_{k}").read_text())
    return seq.parent


def test_dkm_protocol_on_hpatches_with_the_oracle(mini_hpatches, tmp_path):
    bench = get_benchmark("hpatches", {"root": str(mini_hpatches), "protocol": "dkm"})
    assert bench.conf.resize is None  # DKM loads the images whole
    truth = {(str(p.image0), str(p.image1)): p.H_0to1 for p in bench.load_pairs()}
    made = []

    def make(conf):
        made.append(PerPairOracle(conf, truth))
        return made[-1]

    summ, d = run(
        "hpatches",
        PIPELINE,
        output_dir=tmp_path,
        data_root=mini_hpatches,
        overrides=["data.protocol=dkm"],
        progress=False,
        matcher_factory=make,
    )
    assert made[0].pairs == 5 and max(made[0].loaded) == 800  # graffiti: 800×640, not shrunk
    assert summ["protocol"] == "dkm" and summ["H_error_ransac@3px"] > 0.99
    assert set(k for k in summ if "@" in k) == {f"H_error_ransac@{t}px" for t in (3, 5, 10)}
    with pytest.raises(Exception, match="unknown protocol 'loftr'"):
        get_benchmark("hpatches", {"root": str(mini_hpatches), "protocol": "loftr"})
