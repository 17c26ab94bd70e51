"""GIM's zero-shot losses on video labels (reference-methods §2.5), against hand computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.helpers import texture
from tiepoint.models.dense.losses import dkm_zero_shot_loss
from tiepoint.models.dense_two_view_pipeline import DenseTwoViewPipeline
from tiepoint.models.matchers.lightglue import LightGlue
from tiepoint.models.two_view_pipeline import TwoViewPipeline


def test_lightglue_zero_shot_loss_is_minus_mean_diagonal():
    torch.manual_seed(0)
    b, m, n = 2, 6, 7
    la = torch.randn(b, m + 1, n + 1)
    m0 = torch.tensor([[0, 1, 5, -1, 4, 2], [0, 2, 2, 3, -1, -1]])
    lg = LightGlue({"features": None, "pretrained": False, "n_layers": 2, "input_dim": 256})
    losses, metrics = lg.loss(
        {"log_assignment": la, "matches0": m0}, {"zs_num_labels": torch.tensor([3, 5])}
    )
    want0 = -(la[0, 0, 0] + la[0, 1, 1] + la[0, 2, 2]) / 3
    want1 = -sum(la[1, i, i] for i in range(5)) / 5
    torch.testing.assert_close(losses["total"], torch.stack([want0, want1]))
    # labels matched to their partner: pair 0 rows 0, 1 (of 3); pair 1 rows 0, 2, 3 (of 5)
    torch.testing.assert_close(metrics["label_recall"], torch.tensor([2 / 3, 3 / 5]))


def _labels_pair(h=180, w=240, k=40, seed=0):
    rng = np.random.default_rng(seed)
    img = texture(w, h, seed)
    shift = np.array([7.0, -4.0])
    img1 = np.roll(img, (int(-shift[1]), int(shift[0])), axis=(0, 1))  # image 1 = image 0 + shift
    p0 = rng.uniform(30, [w - 30, h - 30], (k, 2))
    lab = np.zeros((1, 60, 4), np.float32)
    lab[0, :k] = np.c_[p0, p0 + shift]
    view = lambda a: {
        "image": torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255,
        "image_size": torch.tensor([[w, h]], dtype=torch.float32),
    }
    return view(img), view(img1), torch.from_numpy(lab), torch.tensor([k])


def test_two_view_pipeline_puts_labels_first_and_lightglue_scores_their_diagonal():
    torch.manual_seed(0)
    v0, v1, lab, num = _labels_pair()
    model = TwoViewPipeline(
        {
            "extractor": {
                "name": "aliked",
                "model_name": "aliked-n16",
                "max_num_keypoints": 64,
                "detection_threshold": -1,
            },
            "matcher": {
                "name": "lightglue",
                "features": "aliked",
                "depth_confidence": -1,
                "width_confidence": -1,
            },
        },
    ).eval()
    data = {"view0": v0, "view1": v1, "pseudo_labels": lab, "num_labels": num}
    with torch.no_grad():
        pred = model(data)
        losses, metrics = model.loss(pred, data)
    k = int(num[0])
    torch.testing.assert_close(pred["keypoints0"][0, :k], lab[0, :k, :2])
    torch.testing.assert_close(pred["keypoints1"][0, :k], lab[0, :k, 2:])
    assert pred["keypoints0"].shape[1] == 64 and pred["zs_num_labels"].tolist() == [k]
    la = pred["log_assignment"][0]
    want = -torch.stack([la[i, i] for i in range(k)]).mean()
    torch.testing.assert_close(losses["total"][0], want)
    # the official weights find most true labels; with the partners shuffled they find none
    wrong = lab.clone()
    wrong[0, :k, 2:] = lab[0, torch.randperm(k), 2:]
    with torch.no_grad():
        bad = {**data, "pseudo_labels": wrong}
        l_bad, m_bad = model.loss(model(bad), bad)
    assert metrics["label_recall"][0] > 0.5 and m_bad["label_recall"][0] < 0.1
    assert l_bad["total"][0] > losses["total"][0] + 2
    # described at a given point = described at the same point when ALIKED detects it itself
    ext = model.extractor
    det = ext({"image": v0["image"]})
    forced = ext({"image": v0["image"], "keypoints": det["keypoints"][:, :10]})
    torch.testing.assert_close(forced["descriptors"], det["descriptors"][:, :10])
    torch.testing.assert_close(forced["keypoint_scores"], det["keypoint_scores"][:, :10])


def test_dkm_zero_shot_loss_matches_hand_computation_at_every_scale():
    """An affine warp field (exact under bilinear sampling) at three scales."""
    torch.manual_seed(0)
    W0, H0, W1, H1 = 64, 48, 80, 40
    A = torch.tensor([[0.9, 0.1], [-0.05, 1.1]])
    c = torch.tensor([0.02, -0.03])
    scales = {}
    for s, off in [(4, 0.01), (2, 0.0), (1, -0.02)]:
        h, w = H0 // s, W0 // s
        ys = (torch.arange(h) + 0.5) / h * 2 - 1
        xs = (torch.arange(w) + 0.5) / w * 2 - 1
        g = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), -1)  # (h,w,2) x first
        warp = g @ A.T + c + off
        scales[s] = {"warp": warp[None].repeat(2, 1, 1, 1), "certainty": torch.zeros(2, h, w)}
    p0 = torch.rand(2, 9, 2) * torch.tensor([W0 - 12.0, H0 - 12.0]) + 6  # inside the hull
    p1 = torch.rand(2, 9, 2) * torch.tensor([W1 - 1.0, H1 - 1.0])
    lab = torch.cat([p0, p1], -1)
    num = torch.tensor([9, 5])
    losses, metrics = dkm_zero_shot_loss({"scales": scales}, lab, num, (W0, H0), (W1, H1))
    u0 = (p0 + 0.5) / torch.tensor([W0, H0]) * 2 - 1
    u1 = (p1 + 0.5) / torch.tensor([W1, H1]) * 2 - 1
    total = 0.0
    for s, off in [(4, 0.01), (2, 0.0), (1, -0.02)]:
        d = (u0 @ A.T + c + off - u1).norm(dim=-1)
        per = torch.stack([d[0, :9].mean(), d[1, :5].mean()])
        torch.testing.assert_close(losses[f"zs_epe_{s}"], per.mean(), atol=1e-5, rtol=1e-5)
        total = total + per.mean()
    torch.testing.assert_close(losses["total"], total, atol=1e-5, rtol=1e-5)
    px = ((u0 @ A.T + c - 0.02 - u1) * torch.tensor([W1, H1]) / 2).norm(dim=-1)
    torch.testing.assert_close(
        metrics["epe"], torch.stack([px[0, :9].mean(), px[1, :5].mean()]), atol=1e-4, rtol=1e-4
    )
    # at most max_labels random labels per pair enter the loss
    sub, _ = dkm_zero_shot_loss(
        {"scales": {1: scales[1]}},
        lab,
        num,
        (W0, H0),
        (W1, H1),
        max_labels=3,
        generator=torch.Generator().manual_seed(0),
    )
    d = (u0 @ A.T + c - 0.02 - u1).norm(dim=-1)
    means = [torch.stack(list(x)).mean() for x in __import__("itertools").combinations(d[0, :9], 3)]
    assert (
        min(
            abs(float(sub["total"]) - float((m + v) / 2))
            for m in means
            for v in [
                torch.stack(list(y)).mean()
                for y in __import__("itertools").combinations(d[1, :5], 3)
            ]
        )
        < 1e-5
    )


@pytest.mark.parametrize("with_grad", [True])
def test_dense_pipeline_trains_dkm_on_labels(with_grad):
    """The dense training pipeline routes video-label batches to the ZS loss, with gradients."""
    torch.manual_seed(0)
    v0, v1, lab, num = _labels_pair(h=64, w=64, k=20)
    model = DenseTwoViewPipeline(
        {
            "dense": {
                "name": "dkm",
                "pretrained": False,
                "encoder": "resnet18",
                "resize": [64, 64],
                "upsample_res": None,
                "proj_dim": 64,
                "gp_dim": 32,
                "dfn_dim": 64,
                "feat_dim": 32,
                "refiner_blocks": 1,
            }
        },
    ).train()
    data = {"view0": v0, "view1": v1, "pseudo_labels": lab, "num_labels": num}
    pred = model(data)
    losses, metrics = model.loss(pred, data)
    assert set(losses) >= {"total", "zs_epe_1", "zs_epe_32"} and losses["total"].dim() == 0
    losses["total"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert torch.isfinite(metrics["epe"]).all()
