"""Descriptor Reasoning's network (ACCV'24): the parts that see no image.

`ReasoningHead` is the reference `ReasoningBase` with its exact state-dict names
(`dino_reprojection`, `extractor_reprojection`, `texture_attentions.{i}`, `semantic_attentions.{i}`,
the unused `joint_features`), so a released checkpoint loads strictly. Plus the semantic-map
sampling and the resize in front of DINOv2, written to give the reference's numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

PATCH = 14


class ReasoningBlock(nn.Module):
    """The reference `Transformer`: MHA(q, k=v=cur) → fc → cur + MLP([attn, cur]); no LayerNorm."""

    def __init__(self, dim: int = 256, heads: int = 1):
        super().__init__()
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.fc = nn.Linear(dim, dim)
        self.mlp = nn.Sequential(
            nn.Linear(2 * dim, 2 * dim),
            nn.ReLU(),
            nn.Linear(2 * dim, 2 * dim),
            nn.ReLU(),
            nn.Linear(2 * dim, dim),
        )

    def forward(self, q: torch.Tensor, cur: torch.Tensor) -> torch.Tensor:
        attn = self.fc(self.attention(q, cur, cur, need_weights=False)[0])
        return cur + self.mlp(torch.cat([attn, cur], -1))


class ReasoningHead(nn.Module):
    """Local descriptors (B,N,C_loc) + sampled semantics (B,N,C_sem) → every layer of both stacks.

    Texture stack: starts at L = proj(local); layer i queries with S = proj(semantic) when i is
    even and with L when odd. Semantic stack: starts at S, always queries with S. Nothing crosses
    images: this is a per-image refinement, so its outputs can be cached.
    """

    def __init__(
        self, extractor_dim: int, semantic_dim: int, dim: int = 256, layers: int = 5, heads: int = 1
    ):
        super().__init__()
        self.dino_reprojection = nn.Linear(semantic_dim, dim)
        self.extractor_reprojection = nn.Linear(extractor_dim, dim)
        self.texture_attentions = nn.ModuleList(ReasoningBlock(dim, heads) for _ in range(layers))
        self.semantic_attentions = nn.ModuleList(ReasoningBlock(dim, heads) for _ in range(layers))
        self.joint_features = nn.Linear(2 * dim, dim)  # defined, never used (kept for the layout)

    def forward(self, descriptors: torch.Tensor, semantic: torch.Tensor) -> dict:
        s = self.dino_reprojection(semantic)
        loc = self.extractor_reprojection(descriptors)
        texture, cur = [], loc
        for i, block in enumerate(self.texture_attentions):
            cur = block(s if i % 2 == 0 else loc, cur)
            texture.append(cur)
        sem, cur = [], s
        for block in self.semantic_attentions:
            cur = block(s, cur)
            sem.append(cur)
        return {
            "reasoning_features": texture[-1],
            "semantic_features": sem[-1],
            "all_reasoning_features": torch.stack(texture),  # (layers, B, N, dim)
            "all_semantic_features": torch.stack(sem),
        }


def resize_long_edge(image: torch.Tensor, long_side: int) -> tuple[torch.Tensor, float]:
    """Bilinear resize so that the long side is `long_side` (the other side truncated, as the
    reference's `int(w * max / h)`); returns the image and the row scale new_h / h, which the
    reference applies to both keypoint coordinates."""
    h, w = image.shape[-2:]
    if h > w:
        nh, nw = long_side, int(w * long_side / h)
    else:
        nw, nh = long_side, int(h * long_side / w)
    out = F.interpolate(image, size=(nh, nw), mode="bilinear", align_corners=False)
    return out, nh / h


def sample_semantic(
    keypoints: torch.Tensor, fmap: torch.Tensor, mode: str = "bicubic"
) -> torch.Tensor:
    """Semantic map (B,C,h,w) of 14-px patches at keypoints (B,N,2) in the DINO input's pixels →
    (B,N,C), L2-normalised per point. Coordinates map as kp / (w·14, h·14) · 2 − 1 with
    align_corners=False: the reference's convention (x = 0 is the left edge of the map)."""
    b, c, h, w = fmap.shape
    grid = keypoints / keypoints.new_tensor([w * PATCH, h * PATCH]) * 2 - 1
    out = F.grid_sample(fmap, grid.view(b, 1, -1, 2), mode=mode, align_corners=False)
    return F.normalize(out.reshape(b, c, -1), p=2, dim=1).transpose(1, 2)


def mutual_nn(sim: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B,M,N) similarity → matches0 (B,M), matches1 (B,N) of mutual arg-maxima, −1 elsewhere."""
    b, m, n = sim.shape
    if m == 0 or n == 0:
        return sim.new_full((b, m), -1, dtype=torch.long), sim.new_full(
            (b, n), -1, dtype=torch.long
        )
    m0, m1 = sim.argmax(2), sim.argmax(1)
    ok0 = m1.gather(1, m0) == torch.arange(m, device=sim.device)
    ok1 = m0.gather(1, m1) == torch.arange(n, device=sim.device)
    return torch.where(ok0, m0, -1), torch.where(ok1, m1, -1)


def reasoning_similarity(
    f0: torch.Tensor, s0: torch.Tensor, f1: torch.Tensor, s1: torch.Tensor, conditioning: bool
) -> torch.Tensor:
    """The matching rule: cosine of the texture descriptors, times that of the semantic ones when
    `conditioning` (the released models' `semantic_conditioning`)."""
    sim = F.normalize(f0, dim=-1) @ F.normalize(f1, dim=-1).transpose(1, 2)
    if conditioning:
        sim = sim * (F.normalize(s0, dim=-1) @ F.normalize(s1, dim=-1).transpose(1, 2))
    return sim


def dual_softmax_nll(
    f0: torch.Tensor,
    s0: torch.Tensor,
    f1: torch.Tensor,
    s1: torch.Tensor,
    idx0: torch.Tensor,
    idx1: torch.Tensor,
    conditioning: bool,
) -> torch.Tensor:
    """One pair, one layer: (NLL of the row log-softmax at GT pairs + the column one) / 2, on raw
    (un-normalised) features as the reference trains. idx0/idx1 index the GT correspondences."""
    d = f0 @ f1.T
    if conditioning:
        d = d * (s0 @ s1.T)
    if idx0.numel() == 0:
        return d.sum() * 0
    rows = F.log_softmax(d, -1)[idx0, idx1]
    cols = F.log_softmax(d.T, -1)[idx1, idx0]
    return -(rows.mean() + cols.mean()) / 2
