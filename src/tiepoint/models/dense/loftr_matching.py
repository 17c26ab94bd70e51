"""LoFTR's matching stages: dual-softmax coarse matching with mutual nearest neighbours and border
removal, the fine-window gathering (`fine_preprocess` in the checkpoints) and the fine-level
expectation refinement. Plain functions on tensors, so each is tested on hand-made inputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def dual_softmax(f0: torch.Tensor, f1: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Confidence (N, L, S) = softmax_L(sim) · softmax_S(sim), sim = ⟨f0, f1⟩ / C / temperature
    (each side scaled by 1/√C, as LoFTR)."""
    c = f0.shape[-1]
    sim = torch.einsum("nlc,nsc->nls", f0 / c**0.5, f1 / c**0.5) / temperature
    return F.softmax(sim, 1) * F.softmax(sim, 2)


def off_border(h: int, w: int, border: int, device=None) -> torch.Tensor:
    """(h·w,) True for cells at least `border` cells away from every edge of an h×w grid."""
    r = torch.arange(h, device=device)[:, None]
    c = torch.arange(w, device=device)[None, :]
    keep = (r >= border) & (r < h - border) & (c >= border) & (c < w - border)
    return keep.reshape(-1)


def coarse_matches(
    conf: torch.Tensor, hw0: tuple[int, int], hw1: tuple[int, int], thr: float, border: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Matches of a confidence matrix (N, L, S): conf > thr, mutual maximum (of its row and of its
    column, over the whole matrix), both cells off the border. Returns b_ids, i_ids, j_ids, mconf
    (M,), ordered by batch then i."""
    row_max, j_all = conf.max(dim=2)  # (N, L)
    col_max = conf.amax(dim=1)  # (N, S)
    keep0 = off_border(*hw0, border, conf.device)[None]
    keep1 = off_border(*hw1, border, conf.device)
    valid = (row_max > thr) & (torch.gather(col_max, 1, j_all) == row_max) & keep0 & keep1[j_all]
    b_ids, i_ids = torch.where(valid)
    j_ids = j_all[b_ids, i_ids]
    return b_ids, i_ids, j_ids, row_max[b_ids, i_ids]


def grid_points(ids: torch.Tensor, w: int, stride: float) -> torch.Tensor:
    """Flat cell indices of a grid of width w → (M, 2) pixel positions (x, y)·stride."""
    return torch.stack([ids % w, ids // w], dim=1).to(torch.float32) * stride


def gather_windows(feat: torch.Tensor, b_ids, ids, w_c: int, window: int, stride: int):
    """The window×window patches of a fine map (B, C, Hf, Wf) centred on fine pixel
    (x, y)·stride of coarse cells `ids` (zero padding), as (M, window², C): the entries of
    `F.unfold(feat, window, stride=stride, padding=window // 2)` at those cells, without
    unfolding the whole map."""
    pad = window // 2
    padded = F.pad(feat, (pad, pad, pad, pad))
    off = torch.arange(window, device=feat.device)
    rows = (ids // w_c * stride)[:, None] + off
    cols = (ids % w_c * stride)[:, None] + off
    patches = padded[b_ids[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return patches.reshape(len(ids), window * window, feat.shape[1])


class FinePreprocess(nn.Module):
    """Gathers the fine windows of each coarse match; vanilla LoFTR also merges the coarse
    transformer feature of the match into every window position (`down_proj`, `merge_feat`;
    GIM's config switches this off)."""

    def __init__(self, d_coarse: int, d_fine: int, window: int, concat_coarse: bool):
        super().__init__()
        self.window, self.d_fine, self.concat_coarse = window, d_fine, concat_coarse
        if concat_coarse:
            self.down_proj = nn.Linear(d_coarse, d_fine, bias=True)
            self.merge_feat = nn.Linear(2 * d_fine, d_fine, bias=True)
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.kaiming_normal_(p, mode="fan_out", nonlinearity="relu")

    def forward(self, ff0, ff1, fc0, fc1, b_ids, i_ids, j_ids, w0c: int, w1c: int, stride: int):
        if len(b_ids) == 0:
            empty = ff0.new_zeros(0, self.window**2, self.d_fine)
            return empty, empty
        win0 = gather_windows(ff0, b_ids, i_ids, w0c, self.window, stride)
        win1 = gather_windows(ff1, b_ids, j_ids, w1c, self.window, stride)
        if not self.concat_coarse:
            return win0, win1
        c = self.down_proj(torch.cat([fc0[b_ids, i_ids], fc1[b_ids, j_ids]], 0))
        merged = self.merge_feat(
            torch.cat([torch.cat([win0, win1], 0), c[:, None].expand(-1, self.window**2, -1)], -1)
        )
        return merged.chunk(2, dim=0)


def fine_expectation(heatmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Expected position (M, 2) as (x, y) in [-1, 1] (window corners at ±1) of (M, W, W) heatmaps
    that sum to 1, and LoFTR's spread Σ_axes √var (M,) (the fine loss's weight)."""
    m, w, _ = heatmap.shape
    g = torch.linspace(-1, 1, w, device=heatmap.device, dtype=heatmap.dtype)
    gy, gx = torch.meshgrid(g, g, indexing="ij")
    grid = torch.stack([gx, gy], -1).reshape(1, w * w, 2)
    p = heatmap.reshape(m, w * w, 1)
    mean = (grid * p).sum(1)
    var = (grid**2 * p).sum(1) - mean**2
    return mean, var.clamp(min=1e-10).sqrt().sum(-1)


def fine_heatmap(win0: torch.Tensor, win1: torch.Tensor) -> torch.Tensor:
    """Softmax over window 1 of the similarity (scaled 1/√C) of window 0's centre feature with
    every feature of window 1: (M, W, W)."""
    m, ww, c = win0.shape
    w = int(round(ww**0.5))
    sim = torch.einsum("mc,mrc->mr", win0[:, ww // 2], win1)
    return F.softmax(sim * (1.0 / c**0.5), dim=1).view(m, w, w)  # the reference's rounding
