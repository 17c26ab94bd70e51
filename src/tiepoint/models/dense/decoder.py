"""DKM's embedding decoder: the DFN (Yu et al., 2018) blocks RRB and CAB per coarse scale
(`DKM:dkm/models/dkm.py` `DFN`, `RRB`, `CAB`; DKMv3 sizes in `model_zoo/DKMv3.py`).

Per scale s ∈ {32, 16}: feats → Conv1x1(512→256), concat with the GP mean (256), RRB(512→384),
CAB fuses it with the context from the coarser scale, RRB(384→384), Conv1x1 → 3 channels:
one certainty logit and two absolute normalised target coordinates.
"""

from __future__ import annotations

import torch
from torch import nn


class RRB(nn.Module):
    """Residual refinement block: 1×1 projection, then a 3×3-BN-ReLU-3×3 residual branch."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        pad = kernel_size // 2
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad)
        self.relu = nn.ReLU()
        self.bn = nn.BatchNorm2d(out_channels)
        self.conv3 = nn.Conv2d(out_channels, out_channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        res = self.conv3(self.relu(self.bn(self.conv2(x))))
        return self.relu(x + res)


class CAB(nn.Module):
    """Channel attention block: global-pooled attention over [old, new] reweights `new`, plus `old`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.global_pooling = nn.AdaptiveAvgPool2d(1)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 1)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 1)
        self.sigmod = nn.Sigmoid()  # (sic) DKM's attribute name, parameter-free

    def forward(self, old: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
        a = self.global_pooling(torch.cat([old, new], dim=1))
        a = self.sigmod(self.conv2(self.relu(self.conv1(a))))
        return a * new + old


class DFN(nn.Module):
    """The coarse-scale coordinate decoder; state keys as DKM's `decoder.embedding_decoder.*`."""

    def __init__(
        self,
        scales=("32", "16"),
        internal_dim: int = 384,
        feat_dim: int = 256,
        gp_dim: int = 256,
        in_dim: int = 512,
    ):
        super().__init__()
        self.internal_dim = internal_dim
        self.feat_input_modules = nn.ModuleDict({s: nn.Conv2d(in_dim, feat_dim, 1) for s in scales})
        self.rrb_d = nn.ModuleDict({s: RRB(gp_dim + feat_dim, internal_dim) for s in scales})
        self.cab = nn.ModuleDict({s: CAB(2 * internal_dim, internal_dim) for s in scales})
        self.rrb_u = nn.ModuleDict({s: RRB(internal_dim, internal_dim) for s in scales})
        self.terminal_module = nn.ModuleDict({s: nn.Conv2d(internal_dim, 3, 1) for s in scales})

    def scales(self) -> list[int]:
        return [int(s) for s in self.terminal_module]

    def forward(self, embeddings, feats, context, key: str):
        """→ (coords (B,2,h,w), certainty logit (B,1,h,w), new context (B,internal_dim,h,w))."""
        feats = self.feat_input_modules[key](feats)
        embeddings = self.rrb_d[key](torch.cat([feats, embeddings], dim=1))
        context = self.rrb_u[key](self.cab[key](context, embeddings))
        preds = self.terminal_module[key](context)
        return preds[:, -2:], preds[:, :-2], context
