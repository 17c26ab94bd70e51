"""Loss values against a direct element-by-element computation, and metrics on a hand-built case."""

import math

import torch

from tiepoint.geometry.gt import gt_matches_from_homography
from tiepoint.models.losses import (
    confidence_loss,
    confidence_targets,
    deep_supervision_loss,
    layer_weights,
    matcher_metrics,
    nll_loss,
)


def _random_case(seed=0, b=2, m=5, n=4):
    g = torch.Generator().manual_seed(seed)
    la = torch.randn(b, m + 1, n + 1, generator=g).log_softmax(-1)  # any log-probabilities will do
    m0 = torch.tensor([[1, -1, -2, 0, -1], [-2, 3, -1, -1, 2]])[:b]
    m1 = torch.full((b, n), -1)
    for bi in range(b):
        for i, j in enumerate(m0[bi].tolist()):
            if j >= 0:
                m1[bi, j] = i
    m1[0, 2] = -2
    a = torch.zeros(b, m, n, dtype=torch.bool)
    for bi in range(b):
        for i, j in enumerate(m0[bi].tolist()):
            if j >= 0:
                a[bi, i, j] = True
    return la, {"gt_assignment": a, "gt_matches0": m0, "gt_matches1": m1}


def _direct_nll(la, gt, balancing):
    out = []
    for bi in range(la.shape[0]):
        m0, m1 = gt["gt_matches0"][bi].tolist(), gt["gt_matches1"][bi].tolist()
        m, n = len(m0), len(m1)
        pos = [-la[bi, i, j].item() for i, j in enumerate(m0) if j >= 0]
        neg = [-la[bi, i, n].item() for i, j in enumerate(m0) if j == -1]
        neg += [-la[bi, m, j].item() for j, i in enumerate(m1) if i == -1]
        out.append(balancing * sum(pos) / len(pos) + (1 - balancing) * sum(neg) / len(neg))
    return torch.tensor(out)


def test_nll_matches_direct_computation():
    la, gt = _random_case()
    for bal in (0.5, 0.8):
        nll, parts = nll_loss(la, gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"], bal)
        assert torch.allclose(nll, _direct_nll(la, gt, bal), atol=1e-6)
    assert parts["num_matchable"].tolist() == [2, 2]
    assert parts["num_unmatchable"].tolist() == [2 + 1, 2 + 2]  # −2 labels count nowhere


def test_deep_supervision_weights_and_mean():
    assert layer_weights(3, 0.5) == [0.25, 0.5, 1.0]
    assert layer_weights(3, -1) == [1.0, 2.0, 3.0]
    las = [_random_case(seed=s)[0] for s in range(3)]
    _, gt = _random_case()
    total, parts = deep_supervision_loss(las, gt, gamma=0.5)
    direct = sum(w * _direct_nll(la, gt, 0.5) for w, la in zip([0.25, 0.5, 1.0], las)) / 1.75
    assert torch.allclose(total, direct, atol=1e-6)
    assert torch.allclose(parts["nll_last"], _direct_nll(las[-1], gt, 0.5), atol=1e-6)


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_confidence_loss_direct():
    """Reference form (Glue Factory TokenConfidence.loss): a point's argmax runs over its row
    (column) *with* the dustbin; per layer (mean over image 0 + mean over image 1) / 2; mean of
    the layers."""
    m, n = 5, 4
    finals = _random_case(seed=2, b=1)[0]
    layers = [_random_case(seed=s, b=1)[0] for s in (1, 3)]
    logits0 = [torch.randn(1, m) for _ in layers]
    logits1 = [torch.randn(1, n) for _ in layers]
    got = confidence_loss(logits0, logits1, layers, finals)
    per_layer = []
    for la, l0, l1 in zip(layers, logits0, logits1):
        rows = [
            _bce(l0[0, i].item(), float(la[0, i, :].argmax() == finals[0, i, :].argmax()))
            for i in range(m)
        ]
        cols = [
            _bce(l1[0, j].item(), float(la[0, :, j].argmax() == finals[0, :, j].argmax()))
            for j in range(n)
        ]
        per_layer.append((sum(rows) / m + sum(cols) / n) / 2)
    assert abs(got.item() - sum(per_layer) / 2) < 1e-5


def test_confidence_target_counts_agreeing_on_the_dustbin():
    # both layers send point 0 of image 0 to the dustbin: that is agreement (target 1), which the
    # old "dustbin excluded" form would have judged on the M×N block alone
    final = torch.full((1, 3, 3), -10.0)
    final[0, 0, 2] = 0.0  # point 0 → dustbin
    final[0, 0, 1] = -1.0  # its best real candidate: 1
    final[0, 1, 0] = 0.0
    layer = final.clone()
    layer[0, 0, 0] = -0.5  # best real candidate now 0, but the dustbin still wins
    t0, _ = confidence_targets(layer, final)
    assert t0[0, 0].item() == 1.0
    layer[0, 0, 0] = 1.0  # now point 0 picks a real match: disagreement
    t0, _ = confidence_targets(layer, final)
    assert t0[0, 0].item() == 0.0


def test_loss_is_minimal_for_the_ground_truth_assignment():
    # A log-assignment that puts all mass on the GT has a lower loss than a perturbed one.
    la, gt = _random_case(b=1)
    good = torch.full_like(la, -20.0)
    for i, j in enumerate(gt["gt_matches0"][0].tolist()):
        good[0, i, j if j >= 0 else 4] = 0.0
    for j, i in enumerate(gt["gt_matches1"][0].tolist()):
        if i == -1:
            good[0, 5, j] = 0.0
    lg, _ = nll_loss(good, gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"])
    lb, _ = nll_loss(la, gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"])
    assert lg.item() < 1e-6 < lb.item()


def test_matcher_metrics_hand_built():
    gt = {"gt_matches0": torch.tensor([[0, 1, -1, -2, 2, -1]])}
    # correct: 0→0, 1→1; wrong: 2 (gt −1) predicted 3; 3 is ignored (−2) whatever it predicts;
    # 4 (gt 2) missed; 5 (gt −1) correctly unmatched.
    pred = {
        "matches0": torch.tensor([[0, 1, 3, 4, -1, -1]]),
        "matching_scores0": torch.tensor([[0.9, 0.5, 0.8, 0.99, 0.0, 0.0]]),
    }
    m = matcher_metrics(pred, gt)
    assert abs(m["match_recall"].item() - 2 / 3) < 1e-6
    assert abs(m["match_precision"].item() - 2 / 3) < 1e-6  # 3 predictions on known points, 2 right
    assert abs(m["accuracy"].item() - 3 / 5) < 1e-6  # 0, 1 and 5 right among 5 known labels
    # ranking by score: 0.9 (right), 0.8 (wrong), 0.5 (right) → AP = (1/1 + 2/3) / 3 GT matches
    assert abs(m["average_precision"].item() - (1 + 2 / 3) / 3) < 1e-6


def test_metrics_with_homography_gt_perfect_prediction():
    kp0 = torch.rand(1, 30, 2) * 100
    H = torch.tensor([[[1.0, 0, 3], [0, 1, -2], [0, 0, 1]]])
    kp1 = torch.cat([kp0[:, :20] + torch.tensor([3.0, -2.0]), torch.rand(1, 10, 2) * 100 + 300], 1)
    gt = gt_matches_from_homography(kp0, kp1, H)
    gt = {f"gt_{k}": v for k, v in gt.items()}
    pred = {"matches0": gt["gt_matches0"].clamp(min=-1)}
    m = matcher_metrics(pred, gt)
    assert m["match_recall"].item() == 1.0 and m["match_precision"].item() == 1.0
