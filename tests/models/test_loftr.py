"""LoFTR: each block against an independent computation (linear attention by loops, dual softmax
and mutual NN on hand-made scores, the fine expectation on hand-made heatmaps, window gathering
against `F.unfold`), the official-layout loader, and the pipeline end to end (random weights
written by the test in the official layout) up to reconstruction's quantisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tiepoint
from tiepoint.api import pipeline_conf, pipeline_weights
from tiepoint.errors import ImageError, WeightsError
from tiepoint.models.dense.loftr import LoFTR
from tiepoint.models.dense.loftr_blocks import linear_attention, sine_encoding
from tiepoint.models.dense.loftr_matching import (
    coarse_matches,
    dual_softmax,
    fine_expectation,
    fine_heatmap,
    gather_windows,
)
from tiepoint.reconstruction.dense_keypoints import PairPoints, pair_record, quantise
from tiepoint.types import matches_from_arrays


@pytest.fixture(scope="module")
def official_ckpt(tmp_path_factory):
    """Random LoFTR weights in the official layout: Lightning `state_dict`, keys `matcher.*`."""
    torch.manual_seed(0)
    model = LoFTR(pretrained=False)
    path = tmp_path_factory.mktemp("loftr") / "loftr_random.ckpt"
    torch.save({"state_dict": {f"matcher.{k}": v for k, v in model.state_dict().items()}}, path)
    return path, model.state_dict()


def test_linear_attention_equals_the_kernel_formula_computed_by_loops():
    g = torch.Generator().manual_seed(0)
    n, L, S, H, D = 2, 5, 7, 2, 3
    q, k, v = (torch.randn(n, m, H, D, generator=g, dtype=torch.float64) for m in (L, S, S))
    phi = lambda x: torch.where(x > 0, x + 1, torch.exp(x))
    out = torch.empty(n, L, H, D, dtype=torch.float64)
    for b in range(n):
        for h in range(H):
            for i in range(L):
                num, den = torch.zeros(D, dtype=torch.float64), 1e-6
                for s in range(S):
                    w = phi(q[b, i, h]) @ phi(k[b, s, h])  # the kernel, not a softmax
                    num, den = num + w * v[b, s, h], den + w
                out[b, i, h] = num / den
    torch.testing.assert_close(linear_attention(q, k, v), out, rtol=1e-10, atol=1e-12)
    # the same as phi(Q) (phi(K)^T V) normalised by phi(Q) phi(K)^T 1, per head
    Q, K = phi(q[0, :, 0]), phi(k[0, :, 0])
    direct = (Q @ (K.T @ v[0, :, 0])) / (Q @ K.sum(0) + 1e-6)[:, None]
    torch.testing.assert_close(linear_attention(q, k, v)[0, :, 0], direct)


def test_dual_softmax_is_the_product_of_row_and_column_softmaxes():
    f0 = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
    f1 = torch.tensor([[[0.5, 0.0], [0.0, 1.0]]])
    sim = np.array([[0.5, 0.0], [0.0, 2.0], [0.5, 1.0]]) / 2 / 0.1  # <f0,f1>/C/temperature
    rows = np.exp(sim) / np.exp(sim).sum(1, keepdims=True)
    cols = np.exp(sim) / np.exp(sim).sum(0, keepdims=True)
    np.testing.assert_allclose(dual_softmax(f0, f1, 0.1)[0].numpy(), rows * cols, rtol=1e-5)


def test_coarse_matches_keep_mutual_maxima_above_threshold_off_the_border():
    # 5x5 grids (25 cells each), border 1: only cells with row, col in 1..3 may match
    conf = torch.zeros(1, 25, 25)
    conf[0, 6, 8] = 0.9  # interior ↔ interior, mutual: kept
    conf[0, 12, 12] = 0.5  # kept
    conf[0, 12, 13] = 0.4  # not the row maximum
    conf[0, 18, 16] = 0.3  # row max of 18, but column 16 has 0.35 from cell 17: not mutual
    conf[0, 17, 16] = 0.35  # kept
    conf[0, 7, 7] = 0.15  # mutual but below the threshold 0.2
    conf[0, 0, 11] = 0.95  # cell 0 is on image 0's border
    conf[0, 11, 4] = 0.95  # cell 4 (row 0) is on image 1's border
    b, i, j, c = coarse_matches(conf, (5, 5), (5, 5), thr=0.2, border=1)
    assert b.tolist() == [0, 0, 0]
    assert list(zip(i.tolist(), j.tolist())) == [(6, 8), (12, 12), (17, 16)]
    torch.testing.assert_close(c, torch.tensor([0.9, 0.5, 0.35]))
    assert len(coarse_matches(conf, (5, 5), (5, 5), thr=0.2, border=3)[0]) == 0


def test_fine_expectation_of_hand_made_heatmaps():
    h = torch.zeros(3, 5, 5, dtype=torch.float64)
    h[0, 1, 3] = 1.0  # row 1 (y), column 3 (x) of linspace(-1, 1, 5)
    h[1, 2, 0] = h[1, 2, 4] = 0.5  # two peaks at x = ±1, y = 0
    h[2] = 1 / 25  # uniform
    mean, std = fine_expectation(h)
    torch.testing.assert_close(mean[0], torch.tensor([0.5, -0.5], dtype=torch.float64))
    torch.testing.assert_close(mean[1], torch.zeros(2, dtype=torch.float64))
    torch.testing.assert_close(std[1], torch.tensor(1.0 + 1e-5, dtype=torch.float64))
    torch.testing.assert_close(mean[2], torch.zeros(2, dtype=torch.float64))
    # uniform over {-1, -.5, 0, .5, 1}: var = 0.5 per axis
    torch.testing.assert_close(std[2], torch.tensor(2 * 0.5**0.5, dtype=torch.float64))
    # the heatmap peaks where window 1 holds window 0's centre feature
    win0 = torch.randn(1, 25, 8)
    win1 = torch.randn(1, 25, 8) * 0.01
    win1[0, 7] = win0[0, 12] * 10  # row 1, column 2
    assert int(fine_heatmap(win0, win1)[0].argmax()) == 7


def test_gathered_windows_equal_the_unfolded_map():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 3, 16, 20, generator=g)  # fine map of a 4x5 coarse grid
    w = 5
    unfold = F.unfold(feat, w, stride=4, padding=w // 2)  # (B, C·W², L)
    unfold = unfold.view(2, 3, w * w, -1).permute(0, 3, 2, 1)  # (B, L, W², C)
    b_ids, ids = torch.tensor([0, 1, 1]), torch.tensor([0, 7, 19])
    torch.testing.assert_close(gather_windows(feat, b_ids, ids, 5, w, 4), unfold[b_ids, ids])


def test_position_encoding_bug_switch():
    fixed, buggy = sine_encoding(256, 3, 4, True), sine_encoding(256, 3, 4, False)
    x = torch.arange(1, 5.0)  # channel 4 (k=1): frequency 10000^(-2/128) with the fix
    torch.testing.assert_close(fixed[0, 4, 0], torch.sin(x * 10000 ** (-2 / 128)))
    # the bug: -log(1e4)/256 // 2 = floor(-0.036) = -1, so frequency e^(-2)
    torch.testing.assert_close(buggy[0, 4, 0], torch.sin(x * np.exp(-2.0)).float())


def test_official_layout_checkpoint_loads_strictly_and_a_wrong_key_is_named(
    official_ckpt, tmp_path
):
    path, state = official_ckpt
    model = LoFTR(weights=str(path))
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, state[k])
    bad = torch.load(path, weights_only=True)
    key = "matcher.loftr_coarse.layers.0.q_proj.weight"
    bad["state_dict"]["matcher.loftr_coarse.layers.0.q_projection.weight"] = bad["state_dict"].pop(
        key
    )
    torch.save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(WeightsError, match=r"bad\.ckpt.*q_pro") as e:
        model.load_checkpoint(tmp_path / "bad.ckpt")
    assert "\n" not in str(e.value)
    with pytest.raises(WeightsError, match="loftr_random"):  # vanilla weights into GIM's variant
        LoFTR(preset="gim", weights=str(path))


def test_pipelines_and_their_weights():
    assert pipeline_weights("loftr") == ["loftr_outdoor"]
    assert pipeline_weights("loftr_indoor") == ["loftr_indoor"]
    assert pipeline_weights("gim_loftr") == ["gim_loftr_50h"]
    assert pipeline_conf("gim_loftr").dense.preset == "gim"


@pytest.fixture(scope="module")
def bikes_result(data_dir, official_ckpt):
    seq = data_dir / "homography" / "oxford_bikes"
    # threshold 0: every mutual nearest neighbour (random weights are rarely confident)
    overrides = ["dense.resize=160", "dense.match_threshold=0.0"]
    args = (seq / "img1.png", seq / "img3.png")
    return tiepoint.match(*args, pipeline="loftr", weights=official_ckpt[0], overrides=overrides)


def test_match_returns_a_well_formed_result_on_loftr_grid_points(bikes_result):
    r = bikes_result
    k = len(r.matches)
    assert k > 0 and r.dense is None
    assert r.image_size0 == (1000, 700)
    np.testing.assert_array_equal(r.matches, np.stack([np.arange(k)] * 2, -1))
    assert r.scores.shape == (k,) and np.all((r.scores >= 0) & (r.scores <= 1))
    # points of image 0 are coarse cells 8·(c, r) of the 160x112 network input, in the original
    # frame: (8c + 0.5)·1000/160 − 0.5, off the 2-cell border
    s = np.array([1000 / 160, 700 / 112])
    cell = ((r.keypoints0 + 0.5) / s - 0.5) / 8
    np.testing.assert_allclose(cell, np.round(cell), atol=1e-3)
    assert cell.min() >= 2 - 1e-3 and np.all(cell.max(0) <= np.array([20 - 3, 14 - 3]) + 1e-3)
    # image 1: the fine offset moves at most 2 fine pixels (4 network px) from its cell
    c1 = ((r.keypoints1 + 0.5) / s - 0.5) / 8
    assert np.abs(c1 - np.round(c1)).max() <= 0.5 + 1e-3


def test_flat_and_tiny_images_give_no_matches(official_ckpt):
    flat = np.full((64, 64, 3), 128, np.uint8)
    matcher = tiepoint.Matcher("loftr", weights=official_ckpt[0])
    r = matcher.match(flat, flat)
    assert len(r.matches) == 0 and r.keypoints0.shape == (0, 2) and r.scores.shape == (0,)
    # the model itself: a 1×1 or a grid too small to leave cells off the border → nothing
    model = matcher.dense
    for size in ((1, 1), (32, 64)):
        with torch.inference_mode():
            pred = model({"image0": torch.rand(1, 3, *size), "image1": torch.rand(1, 3, 64, 64)})
        m, c = model.sample(pred)
        assert m.shape == (0, 4) and c.shape == (0,)
    # the loader refuses a 1×1 file with one line naming it
    with pytest.raises(ImageError, match="too small"):
        matcher.match(np.zeros((1, 1, 3), np.uint8), flat)


def test_reconstruction_quantises_loftr_matches(bikes_result):
    arrays = pair_record(bikes_result, 1, 1)
    m, s = matches_from_arrays(arrays)
    p0, p1 = arrays["keypoints0"][m[:, 0]], arrays["keypoints1"][m[:, 1]]
    q = quantise([PairPoints("a", "b", p0, p1, s)], cell=4.0)
    qm, _ = q.matches[("a", "b")]
    assert 0 < len(qm) <= len(m)
    # every quantised match is one of LoFTR's matches, snapped within its 4-px cell
    kp0, kp1 = q.keypoints["a"][qm[:, 0]], q.keypoints["b"][qm[:, 1]]
    d0 = np.abs(kp0[:, None] - p0[None]).max(-1)
    d1 = np.abs(kp1[:, None] - p1[None]).max(-1)
    assert np.all(((d0 < 4) & (d1 < 4)).any(1))


def test_the_benchmark_runner_evaluates_a_loftr_pipeline(data_dir, official_ckpt, tmp_path):
    from tiepoint.evaluation.runner import run

    overrides = [
        "data.tasks=[homography]",
        "data.max_pairs=1",
        "dense.resize=160",
        "dense.match_threshold=0.0",
    ]
    summ, d = run(
        "pairs",
        "loftr",
        output_dir=tmp_path,
        data_root=data_dir,
        overrides=overrides,
        progress=False,
        weights=official_ckpt[0],
    )
    assert summ["mnum_matches"] > 0 and 0 <= summ["mprec@3px"] <= 1
    assert (d / "predictions.h5").is_file()
