"""Deformable convolution (DCN v1/v2) in plain torch, so ALIKED needs no torchvision.

`deform_conv2d` has the semantics of `torchvision.ops.deform_conv2d`: for output pixel p and kernel
tap k the input is sampled bilinearly at p·stride − padding + k·dilation + offset[k] (zero outside
the image, corner by corner), optionally multiplied by a modulation mask, and the samples are mixed by
the weight. Offsets are laid out as torchvision's: channel 2·(g·K + k) is the y (row) shift and
2·(g·K + k) + 1 the x (column) shift of tap k = i·kw + j in offset group g.

Implementation: per image (and offset group) one `grid_sample` (bilinear, zero padding) with the K
taps as its batch, so its output is the im2col matrix (K·Cin, Ho·Wo), then a single matmul against
the weight reordered to (tap, channel). No loop over pixels or taps; the input is expanded, never
copied, and a channels-last input makes the sampling about twice as fast.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair


def _tap_grid(kh: int, kw: int, dh: int, dw: int, device, dtype) -> torch.Tensor:
    """(K, 2) kernel tap displacements (y, x) in input pixels, taps in row-major order."""
    ii, jj = torch.meshgrid(
        torch.arange(kh, device=device, dtype=dtype) * dh,
        torch.arange(kw, device=device, dtype=dtype) * dw,
        indexing="ij",
    )
    return torch.stack([ii.reshape(-1), jj.reshape(-1)], -1)


def deform_conv2d(
    input: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Deformable 2-D convolution, a drop-in for `torchvision.ops.deform_conv2d`.

    input (B, Cin, H, W); offset (B, 2·G·kh·kw, Ho, Wo); weight (Cout, Cin/groups, kh, kw);
    mask (B, G·kh·kw, Ho, Wo) or None. Offset groups G and conv groups are read off the shapes.
    """
    b, cin, h, w = input.shape
    cout, cin_g, kh, kw = weight.shape
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    k = kh * kw
    groups = cin // cin_g
    n_off = offset.shape[1] // (2 * k)
    ho = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    wo = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if cin_g * groups != cin or cout % groups:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit {cin} input channels")
    if n_off < 1 or offset.shape[1] != 2 * n_off * k or cin % n_off:
        raise ValueError(
            f"offset has {offset.shape[1]} channels; expected 2·G·{k} with G dividing {cin}"
        )
    if offset.shape[0] != b or offset.shape[-2:] != (ho, wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} does not match output {(b, ho, wo)}")
    if mask is not None and (mask.shape[1] != n_off * k or mask.shape[-2:] != (ho, wo)):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {(b, n_off * k, ho, wo)}")
    cg = cin // n_off

    # Absolute sample positions (B, G, K, Ho, Wo), normalised for grid_sample(align_corners=False),
    # whose bilinear mode with zero padding is exactly the corner-wise zero-padded interpolation.
    off = offset.view(b, n_off, k, 2, ho, wo)
    taps = _tap_grid(kh, kw, dh, dw, input.device, offset.dtype)  # K,2
    oy = torch.arange(ho, device=input.device, dtype=offset.dtype) * sh - ph
    ox = torch.arange(wo, device=input.device, dtype=offset.dtype) * sw - pw
    py = off[:, :, :, 0] + (taps[:, 0].view(k, 1, 1) + oy.view(1, ho, 1))
    px = off[:, :, :, 1] + (taps[:, 1].view(k, 1, 1) + ox.view(1, 1, wo))
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)  # B,G,K,Ho,Wo,2
    groups_in = input.view(b, n_off, cg, h, w)
    masks = None if mask is None else mask.view(b, n_off, k, 1, ho * wo)

    outs = []
    for bi in range(b):
        # The taps are the batch of one grid_sample (its CPU kernel parallelises over the batch);
        # the input is only expanded, not copied. Columns come out as (K, Cin, Ho·Wo).
        cols = []
        for g in range(n_off):
            src = groups_in[bi, g].unsqueeze(0).expand(k, -1, -1, -1)
            c = F.grid_sample(src, grid[bi, g], "bilinear", "zeros", align_corners=False).view(
                k, cg, ho * wo
            )
            cols.append(c if masks is None else c * masks[bi, g])
        cols = cols[0] if n_off == 1 else torch.cat(cols, 1)
        if groups == 1:
            wmat = weight.permute(0, 2, 3, 1).reshape(cout, k * cin)  # (tap, channel) order
            outs.append(torch.mm(wmat, cols.view(k * cin, ho * wo)))
        else:
            cols = (
                cols.view(k, groups, cin_g, ho * wo)
                .transpose(0, 1)
                .reshape(groups, k * cin_g, ho * wo)
            )
            wmat = (
                weight.view(groups, cout // groups, cin_g, k)
                .transpose(2, 3)
                .reshape(groups, -1, k * cin_g)
            )
            outs.append(torch.bmm(wmat, cols).view(cout, ho * wo))
    out = torch.stack(outs).view(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out


class DeformConv2d(nn.Module):
    """Module holding the weight/bias of a deformable convolution; offsets (and mask) are inputs."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
    ):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"channels {in_channels}->{out_channels} not divisible by groups={groups}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.stride, self.padding, self.dilation = _pair(stride), _pair(padding), _pair(dilation)
        kh, kw = _pair(kernel_size)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, kh, kw))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.weight[0].numel()
            nn.init.uniform_(self.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))

    def forward(
        self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, "
            f"kernel_size={tuple(self.weight.shape[-2:])}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


__all__ = ["DeformConv2d", "deform_conv2d"]
