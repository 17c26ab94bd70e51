"""Deformable convolution (DCN v1/v2) in plain torch, so ALIKED needs no torchvision.

`deform_conv2d` has the semantics of `torchvision.ops.deform_conv2d`: for output pixel p and kernel
tap k the input is sampled bilinearly at p·stride − padding + k·dilation + offset[k] (zero outside the
image, corner by corner), optionally multiplied by a modulation mask, and the samples are mixed by
the weight. Offsets are laid out as torchvision's: channel 2·(g·K + k) is the y (row) shift and
2·(g·K + k) + 1 the x (column) shift of tap k = i·kw + j in offset group g.

Implementation: one `grid_sample` (bilinear, zero padding) of all K taps at once, whose output is
already the im2col matrix in the weight's (channel, tap) order, then a single matmul. No Python
loop over pixels or taps; a channels-last input makes the sampling about twice as fast.
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


def bilinear_gather(
    table: torch.Tensor, y: torch.Tensor, x: torch.Tensor, height: int, width: int, row_of
) -> torch.Tensor:
    """Bilinearly interpolate rows of `table` at float positions (y, x), zero outside the image.

    `table` is (R, C); `row_of(yi, xi)` maps integer pixel coordinates (already clamped inside the
    image) to row indices of `table`. Returns (*y.shape, C).
    """
    y0f, x0f = y.floor(), x.floor()
    ly, lx = y - y0f, x - x0f
    y0, x0 = y0f.long(), x0f.long()
    ys = torch.stack([y0, y0, y0 + 1, y0 + 1], -1)
    xs = torch.stack([x0, x0 + 1, x0, x0 + 1], -1)
    wy = torch.stack([1 - ly, 1 - ly, ly, ly], -1)
    wx = torch.stack([1 - lx, lx, 1 - lx, lx], -1)
    valid = (ys >= 0) & (ys < height) & (xs >= 0) & (xs < width)
    w = wy * wx * valid
    rows = row_of(ys.clamp_(0, height - 1), xs.clamp_(0, width - 1))
    vals = table.index_select(0, rows.reshape(-1)).view(*rows.shape, table.shape[-1])
    return (vals * w.unsqueeze(-1)).sum(-2)


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
        raise ValueError(f"offset has {offset.shape[1]} channels; expected 2·G·{k} with G dividing {cin}")
    if offset.shape[0] != b or offset.shape[-2:] != (ho, wo):
        raise ValueError(f"offset shape {tuple(offset.shape)} does not match output {(b, ho, wo)}")
    if mask is not None and (mask.shape[1] != n_off * k or mask.shape[-2:] != (ho, wo)):
        raise ValueError(f"mask shape {tuple(mask.shape)} does not match {(b, n_off * k, ho, wo)}")
    cg = cin // n_off

    # Absolute sample positions (B, G, K, Ho, Wo), then normalised for grid_sample(align_corners=False),
    # whose bilinear mode with zero padding is exactly the corner-wise zero-padded interpolation above.
    off = offset.view(b, n_off, k, 2, ho, wo)
    taps = _tap_grid(kh, kw, dh, dw, input.device, offset.dtype)  # K,2
    oy = torch.arange(ho, device=input.device, dtype=offset.dtype) * sh - ph
    ox = torch.arange(wo, device=input.device, dtype=offset.dtype) * sw - pw
    py = off[:, :, :, 0] + (taps[:, 0].view(k, 1, 1) + oy.view(1, ho, 1))
    px = off[:, :, :, 1] + (taps[:, 1].view(k, 1, 1) + ox.view(1, 1, wo))
    grid = torch.stack([(2 * px + 1) / w - 1, (2 * py + 1) / h - 1], -1)  # B,G,K,Ho,Wo,2
    grid = grid.view(b * n_off, k * ho, wo, 2)
    # columns (B·G, Cg, K·Ho, Wo) = (B, Cin·K, Ho·Wo) in (channel, tap) order, like the weight
    cols = F.grid_sample(input.reshape(b * n_off, cg, h, w), grid, "bilinear", "zeros", align_corners=False)
    cols = cols.view(b, n_off, cg, k, ho * wo)
    if mask is not None:
        cols = cols * mask.view(b, n_off, 1, k, ho * wo)
    if groups == 1:  # plain mm per image: faster than a broadcast batched matmul on CPU
        wmat = weight.reshape(cout, cin * k)
        out = torch.stack([torch.mm(wmat, c) for c in cols.view(b, cin * k, ho * wo)])
    else:
        cols = cols.reshape(b, groups, cin_g * k, ho * wo)
        out = torch.matmul(weight.view(groups, cout // groups, cin_g * k), cols)  # B,groups,Cout/g,HoWo
    out = out.view(b, cout, ho, wo)
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
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
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

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return deform_conv2d(
            x, offset, self.weight, self.bias, self.stride, self.padding, self.dilation, mask
        )

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel_size={tuple(self.weight.shape[-2:])}, "
            f"stride={self.stride}, padding={self.padding}, dilation={self.dilation}, "
            f"groups={self.groups}, bias={self.bias is not None}"
        )


__all__ = ["deform_conv2d", "DeformConv2d", "bilinear_gather"]
