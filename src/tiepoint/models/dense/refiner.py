"""DKM's ConvRefiner and the local correlation it feeds on (`DKM:dkm/models/dkm.py` `ConvRefiner`,
`DKM:dkm/utils/local_correlation.py`).

At each scale the refiner sees [f0, f1 sampled at the warp, Conv1x1 embedding of (warp − grid),
local correlation of f0 with a (2r+1)² window of f1 around the warp target] and predicts a
certainty-logit increment and a displacement (in units the caller scales by s/(4W), s/(4H)).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..base import fold_batch_norm
from .gp import grid_coords


def local_correlation(f0: torch.Tensor, f1: torch.Tensor, radius: int, flow: torch.Tensor):
    """(B, (2r+1)², h, w): ⟨f0(p), f1(flow(p) + δ)⟩/√C for a window of offsets δ.

    The offsets step by 2/h (2/w) in normalised units, i.e. one pixel of the f0 grid, and are
    ordered row-major with y outer, x inner. f1 is sampled bilinearly (zeros outside).
    """
    b, c, h, w = f0.shape
    r = radius
    k = 2 * r + 1
    dy = torch.linspace(-2 * r / h, 2 * r / h, k, device=f0.device, dtype=f0.dtype)
    dx = torch.linspace(-2 * r / w, 2 * r / w, k, device=f0.device, dtype=f0.dtype)
    wy, wx = torch.meshgrid(dy, dx, indexing="ij")
    window = torch.stack((wx, wy), dim=-1).reshape(k * k, 2)
    target = flow.permute(0, 2, 3, 1)
    if torch.is_grad_enabled() and (f0.requires_grad or f1.requires_grad):
        # one sampling of all offsets (DKM's form): the graph stays small for training
        coords = (target[:, :, :, None] + window).reshape(b, h, w * k * k, 2)
        sampled = F.grid_sample(f1, coords, padding_mode="zeros", align_corners=False)
        sampled = sampled.reshape(b, c, h, w, k * k)
        return torch.einsum("bchw,bchwk->bkhw", f0, sampled) / c**0.5
    # inference: one offset at a time, so the (B, C, h, w, (2r+1)²) stack of sampled features
    # (about 1 GB per scale at DKM's resolutions) is never materialised
    out = f0.new_empty(b, k * k, h, w)
    for j in range(k * k):
        s = F.grid_sample(f1, target + window[j], padding_mode="zeros", align_corners=False)
        out[:, j] = torch.einsum("bchw,bchw->bhw", f0, s)
    return out / c**0.5


def _conv_bn_relu(conv: nn.Conv2d, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """relu(bn(conv(x))) in eval mode as one conv with the BatchNorm folded into its weights."""
    x = F.conv2d(
        x, *fold_batch_norm(conv, bn), conv.stride, conv.padding, conv.dilation, conv.groups
    )
    return F.relu(x, inplace=True)


class ConvRefiner(nn.Module):
    """Depthwise 5×5 conv blocks (conv(groups=in), BN, ReLU, 1×1): 1 entry + `hidden_blocks`, then
    a 1×1 conv to (Δcertainty, Δx, Δy). State keys as DKM's `decoder.conv_refiner.<s>.*`."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int = 3,
        kernel_size: int = 5,
        hidden_blocks: int = 8,
        displacement_emb_dim: int = 16,
        local_corr_radius: int | None = None,
    ):
        super().__init__()
        self.block1 = self._block(in_dim, hidden_dim, kernel_size)
        self.hidden_blocks = nn.Sequential(
            *[self._block(hidden_dim, hidden_dim, kernel_size) for _ in range(hidden_blocks)]
        )
        self.out_conv = nn.Conv2d(hidden_dim, out_dim, 1)
        self.disp_emb = nn.Conv2d(2, displacement_emb_dim, 1)
        self.local_corr_radius = local_corr_radius

    @staticmethod
    def _block(in_dim: int, out_dim: int, kernel_size: int) -> nn.Sequential:
        if out_dim % in_dim:
            raise ValueError(f"depthwise block needs out_dim % in_dim == 0 ({out_dim}, {in_dim})")
        return nn.Sequential(
            nn.Conv2d(in_dim, out_dim, kernel_size, padding=kernel_size // 2, groups=in_dim),
            nn.BatchNorm2d(out_dim),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_dim, out_dim, 1),
        )

    def forward(self, x: torch.Tensor, y: torch.Tensor, flow: torch.Tensor):
        """x (B,C,h,w) image-0 features, y image-1 features, flow (B,2,h,w) normalised targets →
        (Δcertainty (B,1,h,w), displacement (B,2,h,w))."""
        b, _, h, w = x.shape
        with torch.no_grad():  # as in DKM: no gradient through the sampled features
            x_hat = F.grid_sample(y, flow.permute(0, 2, 3, 1), align_corners=False)
        emb = self.disp_emb(flow - grid_coords(b, h, w, x.device, x.dtype))
        parts = [x, x_hat, emb]
        if self.local_corr_radius:
            parts.append(local_correlation(x, y, self.local_corr_radius, flow))
        z = torch.cat(parts, dim=1)
        if self.training:
            d = self.out_conv(self.hidden_blocks(self.block1(z)))
        else:
            # oneDNN runs these grouped 5×5 convs ~3× faster on channels-last tensors than on
            # NCHW (which it reorders on every call); BatchNorm folded into the conv before it
            z = z.contiguous(memory_format=torch.channels_last)
            for block in (self.block1, *self.hidden_blocks):
                z = block[3](_conv_bn_relu(block[0], block[1], z))
            d = self.out_conv(z).contiguous()
        return d[:, :-2], d[:, -2:]
