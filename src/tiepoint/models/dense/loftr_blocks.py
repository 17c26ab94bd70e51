"""LoFTR's network blocks: ResNet-FPN backbones, sine position encoding, linear attention and the
self/cross transformer (Sun et al., "LoFTR: Detector-Free Local Feature Matching with
Transformers", CVPR 2021), written from the reference (`zju3dv/LoFTR`, kornia's port) and GIM's
variant (`xuelunshen/gim`, `networks/loftr`).

Module and parameter names follow the official checkpoints (`backbone.layer1.0.conv1.weight`,
`loftr_coarse.layers.3.mlp.0.weight`, ...) so that they load strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.resnet import BasicBlock, Bottleneck


def _conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, bias=False)


def _conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def _fuse(cin: int, cout: int) -> nn.Sequential:
    """The FPN's merge block: conv3×3 → BN → LeakyReLU → conv3×3 (keys `.0`, `.1`, `.3`)."""
    return nn.Sequential(
        _conv3x3(cin, cin), nn.BatchNorm2d(cin), nn.LeakyReLU(), _conv3x3(cin, cout)
    )


def _init_convs(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.constant_(m.weight, 1)
            nn.init.constant_(m.bias, 0)


def _up2(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """2× bilinear (align_corners=True, as LoFTR), cropped to `like` (odd sizes)."""
    y = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=True)
    return y[..., : like.shape[2], : like.shape[3]]


class _FPNHead(nn.Module):
    """The top-down path shared by both backbones: the 1/8 map → coarse features, merged with the
    1/4 and 1/2 maps → fine features (`c2`, `c4`, `c8`: trunk widths; `mid`: the 1/4 merge width)."""

    def _make_head(self, c2: int, c4: int, c8: int, fine: int, mid: int, coarse: int) -> None:
        self.layer3_outconv = _conv1x1(c8, coarse)
        self.layer2_outconv = _conv1x1(c4, coarse)
        self.layer2_outconv2 = _fuse(coarse, mid)
        self.layer1_outconv = _conv1x1(c2, mid)
        self.layer1_outconv2 = _fuse(mid, fine)

    def _head(self, x1, x2, x3) -> tuple[torch.Tensor, torch.Tensor]:
        x3_out = self.layer3_outconv(x3)
        x2_out = self.layer2_outconv2(self.layer2_outconv(x2) + _up2(x3_out, x2))
        x1_out = self.layer1_outconv2(self.layer1_outconv(x1) + _up2(x2_out, x1))
        return x3_out, x1_out


class ResNetFPN82(_FPNHead):
    """Vanilla LoFTR's ResNet-18-like FPN on a gray image: stem 7×7/2 (no max-pool), three stages
    of two basic blocks (strides 1, 2, 2) → coarse (1/8, `block_dims[2]`) and fine (1/2,
    `block_dims[0]`) maps."""

    def __init__(self, initial_dim: int = 128, block_dims=(128, 196, 256), in_channels: int = 1):
        super().__init__()
        d1, d2, d3 = block_dims
        self.conv1 = nn.Conv2d(in_channels, initial_dim, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(initial_dim)
        self.relu = nn.ReLU(inplace=True)
        cin = initial_dim
        for i, (d, s) in enumerate(zip((d1, d2, d3), (1, 2, 2))):
            blocks = [BasicBlock(cin, d, s, downsample=s != 1), BasicBlock(d, d)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = d
        self._make_head(d1, d2, d3, fine=d1, mid=d2, coarse=d3)
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x1 = self.layer1(self.relu(self.bn1(self.conv1(x))))
        x2 = self.layer2(x1)
        return self._head(x1, x2, self.layer3(x2))


class _ResNet50Trunk(nn.Module):
    """GIM's ResNet-50 stages 1–3 (torchvision names, no max-pool, no layer4): 1/2, 1/4, 1/8 with
    256, 512, 1024 channels."""

    def __init__(self, in_channels: int = 3):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        cin = 64
        for i, (planes, n) in enumerate(zip((64, 128, 256), (3, 4, 6))):
            stride = 1 if i == 0 else 2
            layer = [Bottleneck(cin, planes, stride, downsample=True)]
            cin = planes * Bottleneck.expansion
            layer += [Bottleneck(cin, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*layer))

    def forward(self, x):
        x1 = self.layer1(self.relu(self.bn1(self.conv1(x))))
        x2 = self.layer2(x1)
        return x1, x2, self.layer3(x2)


class ResNet50FPN82(_FPNHead):
    """GIM-LoFTR's backbone: an RGB ResNet-50 trunk (`encode.*`) with the FPN head to 1/8 (256-d)
    and 1/2 (128-d); GIM's `block_dims` [64, 128, 196, 256, 512, 1024]."""

    def __init__(self, in_channels: int = 3, fine: int = 128, mid: int = 196, coarse: int = 256):
        super().__init__()
        self.encode = _ResNet50Trunk(in_channels)
        self._make_head(256, 512, 1024, fine=fine, mid=mid, coarse=coarse)
        _init_convs(self)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self._head(*self.encode(x))


def sine_encoding(d_model: int, h: int, w: int, temp_bug_fix: bool = True) -> torch.Tensor:
    """LoFTR's 2-D sine encoding (1, d_model, h, w): channels 4k..4k+3 = sin/cos of x, sin/cos of
    y at frequency div_k, positions counted from 1. The official outdoor/indoor weights were
    trained with the "temp bug" (`temp_bug_fix=False`, zju3dv/LoFTR#41): the exponent's divisor is
    `-log(1e4) / d_model // 2` (floor division of a negative number) instead of `/(d_model // 2)`."""
    y = torch.ones(h, w).cumsum(0)[None]
    x = torch.ones(h, w).cumsum(1)[None]
    k = torch.arange(0, d_model // 2, 2).float()
    if temp_bug_fix:
        div = torch.exp(k * (-math.log(10000.0) / (d_model // 2)))
    else:
        div = torch.exp(k * (-math.log(10000.0) / d_model // 2))
    div = div[:, None, None]
    pe = torch.zeros(d_model, h, w)
    pe[0::4], pe[1::4] = torch.sin(x * div), torch.cos(x * div)
    pe[2::4], pe[3::4] = torch.sin(y * div), torch.cos(y * div)
    return pe[None]


class PositionEncodingSine(nn.Module):
    """Adds `sine_encoding` to a (B, C, h, w) map; the table (non-persistent) grows on demand
    (the reference's fixed 256×256 table limits images to 2048 px)."""

    def __init__(self, d_model: int, temp_bug_fix: bool = True, max_shape=(256, 256)):
        super().__init__()
        self.d_model, self.temp_bug_fix = d_model, temp_bug_fix
        self.register_buffer(
            "pe", sine_encoding(d_model, *max_shape, temp_bug_fix), persistent=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if h > self.pe.shape[2] or w > self.pe.shape[3]:
            size = (max(h, self.pe.shape[2]), max(w, self.pe.shape[3]))
            self.pe = sine_encoding(self.d_model, *size, self.temp_bug_fix).to(self.pe)
        return x + self.pe[:, :, :h, :w].to(x.dtype)


def elu_feature_map(x: torch.Tensor) -> torch.Tensor:
    return F.elu(x) + 1


def linear_attention(q, k, v, eps: float = 1e-6) -> torch.Tensor:
    """Linear attention (Katharopoulos et al. 2020) as LoFTR: with φ = elu + 1 per head,
    out_l = φ(q_l)ᵀ Σ_s φ(k_s) v_sᵀ / (φ(q_l)ᵀ Σ_s φ(k_s) + eps). q (N,L,H,D), k/v (N,S,H,D).
    V is divided by S and the result multiplied back (the reference's fp16 guard)."""
    Q, K = elu_feature_map(q), elu_feature_map(k)
    s = v.shape[1]
    kv = torch.einsum("nshd,nshv->nhdv", K, v / s)
    z = 1 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + eps)
    return torch.einsum("nlhd,nhdv,nlh->nlhv", Q, kv, z) * s


class EncoderLayer(nn.Module):
    """LoFTR's attention layer: linear attention on bias-free q/k/v projections, `merge`, LayerNorm,
    then an MLP on [x, message] and a second LayerNorm, added to x (no residual inside)."""

    def __init__(self, d_model: int, nhead: int):
        super().__init__()
        self.nhead, self.dim = nhead, d_model // nhead
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.merge = nn.Linear(d_model, d_model, bias=False)
        self.mlp = nn.Sequential(
            nn.Linear(2 * d_model, 2 * d_model, bias=False),
            nn.ReLU(True),
            nn.Linear(2 * d_model, d_model, bias=False),
        )
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        q = self.q_proj(x).view(b, -1, self.nhead, self.dim)
        k = self.k_proj(source).view(b, -1, self.nhead, self.dim)
        v = self.v_proj(source).view(b, -1, self.nhead, self.dim)
        message = self.merge(linear_attention(q, k, v).reshape(b, -1, self.nhead * self.dim))
        message = self.norm2(self.mlp(torch.cat([x, self.norm1(message)], dim=2)))
        return x + message


class LocalFeatureTransformer(nn.Module):
    """`n_pairs` × (self, cross) layers over two token sets (N, L, C) and (N, S, C); a cross layer
    updates image 0 first and image 1 with the updated image 0 (as the reference)."""

    def __init__(self, d_model: int, nhead: int, n_pairs: int):
        super().__init__()
        self.layer_names = ["self", "cross"] * n_pairs
        self.layers = nn.ModuleList(EncoderLayer(d_model, nhead) for _ in self.layer_names)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def forward(self, f0: torch.Tensor, f1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer, name in zip(self.layers, self.layer_names):
            f0 = layer(f0, f0 if name == "self" else f1)
            f1 = layer(f1, f1 if name == "self" else f0)
        return f0, f1
