"""`tiepoint eval hpatches` end to end on a line pipeline (`aliked+lsd+gluestick`): the homography
benchmark fits with the `point_line` estimator by default, and counts line matches and line inliers.

The dataset is an HPatches viewpoint-style sequence written by the test (known mild homographies of
an image drawn with straight edges for LSD). GlueStick gets "identity" weights: every residual
branch (keypoint encoder, attention and line-message MLPs) outputs zero and both final projections
are a scaled identity, so it is the mutual nearest neighbour of the ALIKED point and endpoint
descriptors — a real, weights-independent check of the line path from extraction to the estimator.
"""

from __future__ import annotations

import json

import cv2
import h5py
import numpy as np
import pytest
import torch
import yaml
from helpers import texture
from PIL import Image

from tiepoint.geometry.homography import warp_points
from tiepoint.types import MatchResult

HS = [  # mild known warps (pixel-centre convention)
    np.array([[1.0, 0.02, 6.0], [-0.02, 1.0, 4.0], [0.0, 0.0, 1.0]]),
    np.array([[0.95, 0.05, 10.0], [-0.04, 1.02, -3.0], [1e-4, -5e-5, 1.0]]),
    np.array([[1.05, 0.0, -5.0], [0.0, 1.05, -4.0], [0.0, 0.0, 1.0]]),
]
SMALL = {
    "name": "gluestick",
    "descriptor_dim": 128,  # ALIKED-n16
    "keypoint_encoder": [32, 64],
    "gnn_layers": ["self", "cross", "self", "cross"],
}


def _line_image(w=640, h=480) -> np.ndarray:
    """Dim texture (for keypoints) under flat rectangles and bars (for LSD)."""
    img = (0.35 * texture(w, h, seed=3)).astype(np.uint8)
    rects = [(40, 40, 240, 180, 230), (320, 80, 560, 280, 180), (100, 260, 280, 440, 200)]
    for x0, y0, x1, y1, v in rects:
        cv2.rectangle(img, (x0, y0), (x1, y1), (v, v, v), -1)
    cv2.line(img, (360, 360), (600, 440), (250, 250, 250), 8)
    cv2.line(img, (20, 460), (240, 240), (240, 240, 240), 6)
    return img


def _write_sequence(root) -> dict:
    seq = root / "v_lines"
    seq.mkdir(parents=True)
    img = _line_image()
    Image.fromarray(img).save(seq / "1.ppm")
    Hs = {}
    for k in range(2, 7):
        Hs[k] = HS[k % 3]
        Image.fromarray(cv2.warpPerspective(img, Hs[k], img.shape[1::-1])).save(seq / f"{k}.ppm")
        (seq / f"H_1_{k}").write_text("\n".join(" ".join(f"{x:.10e}" for x in r) for r in Hs[k]))
    return Hs


def write_identity_gluestick(path, dim=128):
    """A GlueStick training checkpoint (it brings its architecture) that is the mutual nearest
    neighbour of its input descriptors: residual branches zero, final projections 10·I."""
    from tiepoint.models.matchers.gluestick import GlueStick

    conf = {**SMALL, "descriptor_dim": dim}
    state = GlueStick({**conf, "pretrained": False}).state_dict()
    for k in state:  # the last layer of every residual branch
        if ".encoder.6." in k or ".mlp.3." in k:
            state[k] = torch.zeros_like(state[k])
    for proj in ("final_proj", "final_line_proj"):
        state[f"{proj}.weight"] = 10 * torch.eye(dim)[..., None]
        state[f"{proj}.bias"] = torch.zeros(dim)
    state = {f"matcher.{k}": v for k, v in state.items()}
    torch.save({"model": state, "conf": {"model": {"matcher": conf}}}, path)
    return path


@pytest.fixture
def identity_gluestick(tmp_path):
    return write_identity_gluestick(tmp_path / "gs_identity.tar")


def test_eval_hpatches_line_pipeline_uses_point_line(
    tmp_path, official_weights, identity_gluestick
):
    from tiepoint.cli import main

    official_weights("aliked-n16")
    root = tmp_path / "hpatches-sequences-release"
    Hs = _write_sequence(root)
    common = [
        "eval",
        "hpatches",
        "--pipeline",
        "aliked+lsd+gluestick",
        "--weights",
        str(identity_gluestick),
        "--data-root",
        str(root),
        "--output-dir",
        str(tmp_path / "out"),
        "--device",
        "cpu",
    ]
    overrides = [
        "data.max_pairs=2",
        "extractor.max_num_keypoints=256",
        "extractor.lines.max_num_lines=40",
    ]
    assert main([*common, "--tag", "lines", *overrides]) == 0
    out = tmp_path / "out" / "results" / "hpatches" / "lines"
    conf = yaml.safe_load((out / "conf.yaml").read_text())
    assert conf["eval"]["estimator"] == "point_line"  # chosen for the line matcher
    summ = json.loads((out / "summaries.json").read_text())

    with h5py.File(out / "results.h5") as f:
        res = {k: f["homography"][k][()] for k in f["homography"]}
    with h5py.File(out / "predictions.h5") as f:
        preds = [MatchResult.from_h5(f[f"v_lines|1-{k}"]) for k in (2, 3)]
    for i, (r, H) in enumerate(zip(preds, (Hs[2], Hs[3]))):
        lm = r.line_matches
        assert res["num_line_matches"][i] == len(lm) >= 5
        # truth: a correct match lies on the true image of its partner's supporting line
        a = warp_points(H, r.lines0[lm[:, 0]].reshape(-1, 2)).reshape(-1, 2, 2)
        b = r.lines1[lm[:, 1]]
        n = np.cross(np.c_[a[:, 0], np.ones(len(a))], np.c_[a[:, 1], np.ones(len(a))])
        n /= np.linalg.norm(n[:, :2], axis=1, keepdims=True)
        d = np.abs(np.einsum("lk,lek->le", n, np.concatenate([b, np.ones((len(b), 2, 1))], 2)))
        correct = int((d.max(1) < 1.0).sum())
        print(
            f"pair {i}: {len(lm)} line matches, {correct} correct, "
            f"{res['ransac_line_inl'][i]} line inliers, H error {res['H_error_ransac'][i]:.3f}"
        )
        assert correct >= 0.8 * len(lm), (correct, len(lm))
        # the estimator got the lines and kept (about) the correct ones as inliers
        assert 0.8 * correct <= res["ransac_line_inl"][i] <= len(lm)
        assert res["H_error_ransac"][i] < 1.0
    assert summ["mnum_line_matches"] >= 5 and summ["mransac_line_inl"] >= 5

    # an explicit point estimator: same predictions (reused), no lines in the fit
    assert main([*common, "--tag", "points", "--estimator", "opencv", *overrides]) == 0
    summ = json.loads((tmp_path / "out/results/hpatches/points/summaries.json").read_text())
    assert "mransac_line_inl" not in summ and summ["mnum_line_matches"] >= 5


def test_point_line_only_for_homography_only_runs(tmp_path):
    from tiepoint.evaluation.run_conf import build_conf

    def estimator(bench, pipeline="aliked+lsd+gluestick", overrides=()):
        return build_conf(bench, pipeline, overrides=list(overrides), data_root=tmp_path).eval[
            "estimator"
        ]

    assert estimator("hpatches") == "point_line"
    assert estimator("hpatches", "aliked+lightglue") == "opencv"  # no line matcher
    assert estimator("pairs") == "opencv"  # pose pairs too: point_line fits no pose
    assert estimator("pairs", overrides=["data.tasks=[homography]"]) == "point_line"
    assert estimator("hpatches", overrides=["eval.estimator=opencv"]) == "opencv"
