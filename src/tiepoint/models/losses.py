"""Matcher losses and metrics: balanced NLL on a log-assignment, deep supervision, confidence loss.

Labels follow `geometry.gt`: `gt_matches0/1` hold an index (match), −1 (unmatched: should go to the
dustbin) or −2 (ignored: no term in the loss, no count in the metrics); `gt_assignment` (B,M,N)
marks the positive pairs. Every function returns per-pair values of shape (B,) so the trainer can
average, skip or weight them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def nll_loss(
    log_assignment: torch.Tensor,
    gt_assignment: torch.Tensor,
    gt_matches0: torch.Tensor,
    gt_matches1: torch.Tensor,
    balancing: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Negative log-likelihood of the ground truth under a (B,M+1,N+1) log-assignment.

    Positives (matched pairs) and negatives (points that must go to a dustbin) are averaged
    separately and mixed by `balancing`, so the many unmatched points cannot drown the few matches.
    """
    m, n = gt_matches0.shape[-1], gt_matches1.shape[-1]
    la = log_assignment.float()
    pos = gt_assignment.float()
    neg0 = (gt_matches0 == -1).float()
    neg1 = (gt_matches1 == -1).float()
    num_pos = pos.sum((-1, -2))
    num_neg = neg0.sum(-1) + neg1.sum(-1)
    nll_pos = -(la[:, :m, :n] * pos).sum((-1, -2)) / num_pos.clamp(min=1)
    nll_neg = -((la[:, :m, n] * neg0).sum(-1) + (la[:, m, :n] * neg1).sum(-1)) / num_neg.clamp(
        min=1
    )
    nll = balancing * nll_pos + (1 - balancing) * nll_neg
    return nll, {
        "nll_pos": nll_pos,
        "nll_neg": nll_neg,
        "num_matchable": num_pos,
        "num_unmatchable": num_neg,
    }


def layer_weights(num_layers: int, gamma: float) -> list[float]:
    """Weight of each layer's loss: γ^(L−1−i) (the last layer has weight 1); γ ≤ 0 → i + 1."""
    if gamma > 0:
        return [gamma ** (num_layers - 1 - i) for i in range(num_layers)]
    return [float(i + 1) for i in range(num_layers)]


def deep_supervision_loss(
    layer_log_assignments: list[torch.Tensor], gt: dict, gamma: float = 1.0, balancing: float = 0.5
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Weighted mean of the NLL of every layer's log-assignment (the last entry is the output)."""
    w = layer_weights(len(layer_log_assignments), gamma)
    total, parts = 0.0, {}
    for i, la in enumerate(layer_log_assignments):
        nll, p = nll_loss(la, gt["gt_assignment"], gt["gt_matches0"], gt["gt_matches1"], balancing)
        total = total + w[i] * nll
        parts[f"nll_layer{i}"] = nll.detach()
        if i == len(layer_log_assignments) - 1:
            parts.update({"nll_last": nll.detach(), **{k: v.detach() for k, v in p.items()}})
    return total / sum(w), parts


@torch.no_grad()
def confidence_targets(
    layer_la: torch.Tensor, final_la: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """1 where a layer's best candidate already equals the final layer's, per point.

    As in the reference (Glue Factory `TokenConfidence.loss`): a point of image 0 takes the argmax
    of its row *including* the dustbin column (so "unmatched in both" counts as agreement); image 1
    likewise over its column including the dustbin row. The dustbin row/column itself is no point.
    """
    t0 = layer_la[:, :-1, :].argmax(-1) == final_la[:, :-1, :].argmax(-1)
    t1 = layer_la[:, :, :-1].argmax(-2) == final_la[:, :, :-1].argmax(-2)
    return t0.float(), t1.float()


def confidence_loss(
    logits0: list[torch.Tensor],
    logits1: list[torch.Tensor],
    layer_la: list[torch.Tensor],
    final_la: torch.Tensor,
) -> torch.Tensor:
    """BCE between each layer's token-confidence logits and "its prediction is already final".

    Per layer: (mean BCE over the points of image 0 + mean over image 1) / 2; then the mean over
    layers. This trains the early-exit classifier; its inputs are detached descriptors and the
    targets carry no gradient, so it does not change the matcher itself.
    """
    if not logits0:
        return final_la.new_zeros(final_la.shape[0])
    total = 0.0
    for l0, l1, la in zip(logits0, logits1, layer_la):
        t0, t1 = confidence_targets(la, final_la)
        bce0 = F.binary_cross_entropy_with_logits(l0.float(), t0, reduction="none").mean(-1)
        bce1 = F.binary_cross_entropy_with_logits(l1.float(), t1, reduction="none").mean(-1)
        total = total + (bce0 + bce1) / 2
    return total / len(logits0)


@torch.no_grad()
def matcher_metrics(pred: dict, data: dict) -> dict[str, torch.Tensor]:
    """Per-pair match recall / precision / accuracy / average precision against GT, ignoring −2.

    recall = correct predicted matches / GT matches; precision = correct / predicted matches on
    points whose label is known; accuracy also credits correctly rejected (−1) points. Undefined
    values (no GT match, no prediction) are NaN so averages can skip them.
    """
    m_pred, m_gt = pred["matches0"], data["gt_matches0"]
    known = m_gt != -2
    gt_pos = m_gt >= 0
    predicted = (m_pred >= 0) & known
    correct = (m_pred == m_gt) & gt_pos & (m_pred >= 0)
    nan = torch.tensor(float("nan"), device=m_pred.device)

    def ratio(a, b):
        a, b = a.float().sum(-1), b.float().sum(-1)
        return torch.where(b > 0, a / b.clamp(min=1), nan)

    out = {
        "match_recall": ratio(correct, gt_pos),
        "match_precision": ratio(correct, predicted),
        "accuracy": ratio((m_pred == m_gt) & known, known),
    }
    scores = pred.get("matching_scores0")
    if scores is not None:
        # AP of the predictions ranked by confidence, normalised by the number of GT matches
        s = torch.where(predicted, scores.float(), torch.full_like(scores.float(), -1.0))
        order = s.argsort(-1, descending=True)
        c = correct.gather(-1, order).float() * predicted.gather(-1, order).float()
        p_at_k = c.cumsum(-1) / torch.arange(1, c.shape[-1] + 1, device=c.device)
        n_pos = gt_pos.float().sum(-1)
        out["average_precision"] = torch.where(
            n_pos > 0, (p_at_k * c).sum(-1) / n_pos.clamp(min=1), nan
        )
    return out
