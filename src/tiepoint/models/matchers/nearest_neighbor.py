"""Nearest-neighbour descriptor matching: mutual check, Lowe's ratio test, distance threshold."""

from __future__ import annotations

import torch

from ..base import FeatureMatcher


def nearest_neighbor_match(
    desc0: torch.Tensor,
    desc1: torch.Tensor,
    ratio_thresh=None,
    distance_thresh=None,
    mutual_check=True,
):
    """(B,M,D), (B,N,D) L2-normalised descriptors → matches0 (B,M) with −1, and scores in [0, 1].

    Squared distances follow from the similarity, ‖a−b‖² = 2 − 2·a·b, so one matmul serves all tests.
    """
    b, m, _ = desc0.shape
    n = desc1.shape[1]
    if m == 0 or n == 0:
        return torch.full((b, m), -1, dtype=torch.long, device=desc0.device), torch.zeros(
            (b, m), device=desc0.device
        )
    sim = desc0 @ desc1.transpose(1, 2)
    k = 2 if (ratio_thresh and n > 1) else 1
    top_sim, top_idx = sim.topk(k, dim=-1)
    dist = (2 - 2 * top_sim).clamp(min=0)
    matches0 = top_idx[..., 0]
    valid = torch.ones_like(matches0, dtype=torch.bool)
    if k == 2:
        valid &= dist[..., 0] <= ratio_thresh**2 * dist[..., 1]
    if distance_thresh:
        valid &= dist[..., 0] <= distance_thresh**2
    if mutual_check:
        matches1 = sim.argmax(1)  # (B, N)
        valid &= torch.arange(m, device=sim.device)[None] == matches1.gather(1, matches0)
    scores = (top_sim[..., 0] + 1) / 2  # cosine similarity mapped to [0, 1]
    matches0 = torch.where(valid, matches0, -1)
    return matches0, torch.where(valid, scores, torch.zeros_like(scores))


def matches1_from_matches0(matches0: torch.Tensor, n: int) -> torch.Tensor:
    b, m = matches0.shape
    matches1 = torch.full((b, n), -1, dtype=torch.long, device=matches0.device)
    bi, i = torch.where(matches0 > -1)
    matches1[bi, matches0[bi, i]] = i
    return matches1


class NearestNeighborMatcher(FeatureMatcher):
    default_conf = {
        "ratio_thresh": None,
        "distance_thresh": None,
        "mutual_check": True,
        "trainable": False,
    }

    def _init(self, conf):
        pass

    def _forward(self, data: dict) -> dict:
        d0 = torch.nn.functional.normalize(data["descriptors0"].float(), dim=-1)
        d1 = torch.nn.functional.normalize(data["descriptors1"].float(), dim=-1)
        m0, s0 = nearest_neighbor_match(
            d0, d1, self.conf.ratio_thresh, self.conf.distance_thresh, self.conf.mutual_check
        )
        m1 = matches1_from_matches0(m0, d1.shape[1])
        s1 = torch.zeros(m1.shape, device=d1.device)
        bi, j = torch.where(m1 > -1)
        s1[bi, j] = s0[bi, m1[bi, j]]
        return {"matches0": m0, "matches1": m1, "matching_scores0": s0, "matching_scores1": s1}
