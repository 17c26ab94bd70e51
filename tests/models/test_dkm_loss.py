"""DKM loss and dense metrics on constructed predictions whose values are computed by hand."""

import math

import numpy as np
import pytest
import torch

from tiepoint.errors import ConfigError
from tiepoint.geometry.dense_gt import dense_gt_from_homography
from tiepoint.models.dense.losses import dense_metrics, dkm_loss, scale_predictions

IMG = (128, 96)  # (W, H) of both images
H = torch.tensor([[[1.05, 0.03, 20.0], [-0.02, 0.97, 2.0], [1e-4, 0.0, 1.0]]])
SCALES = (32, 16, 8, 4, 2, 1)


def gt_fn(hw):
    return dense_gt_from_homography(H, IMG, IMG, hw)


def perfect_pred(seed=0):
    g = torch.Generator().manual_seed(seed)
    scales = {}
    for s in SCALES:
        hw = (IMG[1] // s, IMG[0] // s)
        warp, _ = gt_fn(hw)
        scales[s] = {"warp": warp.clone(), "certainty": torch.randn(1, *hw, generator=g)}
    return {"scales": scales}


def bce_by_hand(logit, p):
    sig = 1 / (1 + np.exp(-logit))
    return float(np.mean(-(p * np.log(sig) + (1 - p) * np.log(1 - sig))))


def test_perfect_warp_leaves_only_the_certainty_term():
    pred = perfect_pred()
    losses, metrics = dkm_loss(pred, gt_fn)
    expected = 0.0
    for s in SCALES:
        _, prob = gt_fn(pred["scales"][s]["warp"].shape[1:3])
        assert 0 < prob.mean() < 1  # some cells leave image 1: both BCE branches are exercised
        ce = bce_by_hand(pred["scales"][s]["certainty"].double().numpy(), prob.double().numpy())
        assert losses[f"epe_{s}"].item() == pytest.approx(0, abs=1e-7)
        assert losses[f"ce_{s}"].item() == pytest.approx(ce, rel=1e-5)
        expected += 0.01 * ce
    assert losses["total"].item() == pytest.approx(expected, rel=1e-5)
    assert metrics["epe"].item() == pytest.approx(0, abs=1e-4)
    assert metrics["pck@1"].item() == 1.0


def test_coarse_to_fine_mask_excludes_cells_with_large_coarse_error():
    pred = perfect_pred()
    sc = pred["scales"]
    # scale 16 grid is 6×8: a 0.2 error (normalised) in its top-left 2×2 block
    sc[16]["warp"][:, :2, :2] += torch.tensor([0.2, 0.0])
    # scale 8 grid is 12×16: the same region (4×4 cells) is off by 0.5, everything else by 0.01
    sc[8]["warp"] += torch.tensor([0.0, 0.01])
    sc[8]["warp"][:, :4, :4] += torch.tensor([0.5, 0.0])
    losses, _ = dkm_loss(pred, gt_fn)
    _, p16 = gt_fn((6, 8))
    _, p8 = gt_fn((12, 16))
    # scale 16 (> 8) is not masked: its EPE includes the 0.2 block
    n16 = p16.sum().item()
    assert losses["epe_16"].item() == pytest.approx(0.2 * p16[:, :2, :2].sum().item() / n16, 1e-5)
    # scale 8: threshold (2/512)·4·8 = 0.0625 < 0.2 → the block is excluded; the rest has 0.01
    assert p8[:, :4, :4].sum() > 0 and losses["epe_8"].item() == pytest.approx(0.01, rel=1e-4)
    masked = p8.clone()
    masked[:, :4, :4] = 0
    ce8 = bce_by_hand(sc[8]["certainty"].double().numpy(), masked.double().numpy())
    assert losses["ce_8"].item() == pytest.approx(ce8, rel=1e-5)
    # scale 4: threshold 0.03125; scale 8 erred 0.5 in the block (its 8×8 cells here are masked)
    # and 0.01 elsewhere (kept)
    _, p4 = gt_fn((24, 32))
    p4[:, :8, :8] = 0
    ce4 = bce_by_hand(sc[4]["certainty"].double().numpy(), p4.double().numpy())
    assert losses["ce_4"].item() == pytest.approx(ce4, rel=1e-5)
    # without the local mask the 0.5 block counts at scale 8
    unmasked, _ = dkm_loss(pred, gt_fn, local_loss=False)
    assert unmasked["epe_8"].item() > 0.05


def test_gradients_reach_warp_and_certainty():
    pred = perfect_pred()
    for s in SCALES:
        d = pred["scales"][s]
        d["warp"] = (d["warp"] + 0.01).requires_grad_(True)
        d["certainty"].requires_grad_(True)
    losses, _ = dkm_loss(pred, gt_fn)
    losses["total"].backward()
    for s in SCALES:
        d = pred["scales"][s]
        assert torch.isfinite(d["warp"].grad).all() and d["warp"].grad.abs().sum() > 0
        assert torch.isfinite(d["certainty"].grad).all() and d["certainty"].grad.abs().sum() > 0


def test_invalid_cells_do_not_enter_the_epe():
    pred = perfect_pred()
    for s in SCALES:
        d = pred["scales"][s]
        _, prob = gt_fn(d["warp"].shape[1:3])
        d["warp"] = torch.where(prob[..., None] > 0, d["warp"], d["warp"] + 3.0)
        d["warp"].requires_grad_(True)
    losses, metrics = dkm_loss(pred, gt_fn)
    losses["total"].backward()
    for s in SCALES:
        assert losses[f"epe_{s}"].item() == pytest.approx(0, abs=1e-6)
        d = pred["scales"][s]
        _, prob = gt_fn(d["warp"].shape[1:3])
        assert (d["warp"].grad[prob == 0] == 0).all()  # no EPE gradient from invalid cells
    assert metrics["epe"].item() == pytest.approx(0, abs=1e-4)


def test_dkm_layout_adapter_and_batch_gt():
    pred = perfect_pred()
    dkm_layout = {
        "scales": {
            s: {
                "dense_flow": d["warp"].permute(0, 3, 1, 2),
                "dense_certainty": d["certainty"][:, None],
            }
            for s, d in pred["scales"].items()
        }
    }
    batch = {
        "H_0to1": H,
        "view0": {"image": torch.zeros(1, 3, IMG[1], IMG[0])},
        "view1": {"image": torch.zeros(1, 3, IMG[1], IMG[0])},
    }
    a, _ = dkm_loss(pred, gt_fn)
    b, _ = dkm_loss(dkm_layout, batch)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k]) for k in a)
    assert list(scale_predictions(dkm_layout)) == list(SCALES)
    with pytest.raises(ConfigError, match="per-scale"):
        dkm_loss({"warp": torch.zeros(1, 2, 2, 4)}, gt_fn)


def test_dense_metrics_in_pixels():
    gt = torch.zeros(2, 4, 8, 2)
    # 8×4 grid: one normalised x unit is 4 px, one y unit is 2 px
    warp = gt.clone()
    warp[0, :, :4, 0] = 0.5  # 2 px error on half of pair 0
    warp[0, :, 4:, 1] = 2.0  # 4 px error on the other half
    prob = torch.ones(2, 4, 8)
    prob[1] = 0  # pair 1 has no valid cell
    m = dense_metrics(warp, gt, prob)
    assert m["epe"][0].item() == pytest.approx(3.0)
    assert m["pck@1"][0].item() == 0 and m["pck@3"][0].item() == 0.5 and m["pck@5"][0] == 1
    assert all(math.isnan(v[1].item()) for v in m.values())
    m2 = dense_metrics(warp, gt, torch.ones(2, 4, 8), size=(80, 40))  # pixels of a 10× image
    assert m2["epe"][0].item() == pytest.approx(30.0)
