"""DINOv2 ViT-S/B/L/g with patch 14 (Oquab et al., 2023) in plain torch, official key layout.

An official `dinov2_vit{s,b,l,g}14_pretrain.pth` (`cls_token`, `pos_embed`, `mask_token`,
`patch_embed.proj`, `blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.*,ls2.gamma}`, `norm`)
loads strictly, without torch.hub or xFormers. The hub models' settings are fixed here: 518-px
positional grid (37×37), LayerScale, no registers, pos-embed interpolation bicubic with the
historical +0.1 offset given as a *scale factor* and no antialias — so any input whose sides are
multiples of 14 gives the official tokens (see docs/reasoning.md for the parity record).
`last_patch_tokens` is `get_intermediate_layers(x, n=1, reshape=True)[0]`: the last block's
patch tokens after the final LayerNorm, as B×C×H/14×W/14.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...config import lookup
from ...errors import ImageError

PATCH = 14
GRID = 37  # the 518-px training grid of the official positional embeddings
# name → (embed dim, depth, heads, ffn kind)
ARCHS: dict[str, tuple[int, int, int, str]] = {
    "dinov2_vits14": (384, 12, 6, "mlp"),
    "dinov2_vitb14": (768, 12, 12, "mlp"),
    "dinov2_vitl14": (1024, 24, 16, "mlp"),
    "dinov2_vitg14": (1536, 40, 24, "swiglu"),
    # not a DINOv2 release: a small ViT of the same interface, randomly initialised, for offline
    # demonstrations when no DINOv2 file is at hand (no weights exist for it)
    "vit_tiny14": (192, 4, 3, "mlp"),
}


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).unbind(2)
        x = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwiGLU(nn.Module):
    """ViT-g's feed-forward (`SwiGLUFFNFused`): hidden 4·dim·2/3 rounded up to a multiple of 8."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        hidden = (int(hidden * 2 / 3) + 7) // 8 * 8
        self.w12 = nn.Linear(dim, 2 * hidden)
        self.w3 = nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class LayerScale(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, ffn: str):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = (SwiGLU if ffn == "swiglu" else Mlp)(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class DINOv2(nn.Module):
    """A DINOv2 ViT (`name` in `ARCHS`); randomly initialised — load official weights strictly."""

    def __init__(self, name: str = "dinov2_vits14"):
        super().__init__()
        dim, depth, heads, ffn = lookup(ARCHS, name, "DINOv2 model")
        self.name, self.embed_dim = name, dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, GRID * GRID + 1, dim) * 0.02)
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # training-only; kept for the layout
        self.blocks = nn.ModuleList(Block(dim, heads, ffn) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_encoding(self, n_tokens: int, h: int, w: int) -> torch.Tensor:
        """The official positional embedding for an h×w input (pixels, multiples of 14).

        Bicubic from the 37×37 grid with scale factors ((h/14+0.1)/37, (w/14+0.1)/37), no
        antialias; unchanged (no resampling at all) for a square input of the grid's own size."""
        pos = self.pos_embed
        if n_tokens - 1 == GRID * GRID and h == w:
            return pos
        h0, w0 = h // PATCH, w // PATCH
        dtype, pos = pos.dtype, pos.float()
        patch = pos[:, 1:].reshape(1, GRID, GRID, -1).permute(0, 3, 1, 2)
        patch = F.interpolate(
            patch,
            scale_factor=((h0 + 0.1) / GRID, (w0 + 0.1) / GRID),
            mode="bicubic",
            antialias=False,
        )
        patch = patch.permute(0, 2, 3, 1).reshape(1, h0 * w0, -1)
        return torch.cat([pos[:, :1], patch], 1).to(dtype)

    def tokens(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) with H, W multiples of 14 → last-block tokens before the final norm."""
        b, _, h, w = image.shape
        if h % PATCH or w % PATCH or h < PATCH or w < PATCH:
            raise ImageError(
                f"DINOv2 needs an image whose sides are positive multiples of {PATCH}; got {h}×{w}"
            )
        x = self.patch_embed(image)
        x = torch.cat([self.cls_token.expand(b, -1, -1), x], 1)
        x = x + self.interpolate_pos_encoding(x.shape[1], h, w)
        for blk in self.blocks:
            x = blk(x)
        return x

    def last_patch_tokens(self, image: torch.Tensor, with_class_token: bool = False):
        """`get_intermediate_layers(image, n=1, reshape=True, return_class_token=...)[0]`."""
        b, _, h, w = image.shape
        x = self.norm(self.tokens(image))
        patches = x[:, 1:].reshape(b, h // PATCH, w // PATCH, -1).permute(0, 3, 1, 2).contiguous()
        return (patches, x[:, 0]) if with_class_token else patches

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.last_patch_tokens(image)


def floor_to_patch(image: torch.Tensor) -> torch.Tensor:
    """Resize to the sides floored to multiples of 14 with nearest-neighbour sampling (the
    reference `DinoV2` wrapper's `F.interpolate(img, [x // 14 * 14 ...])`, default mode)."""
    h, w = image.shape[-2:]
    size = [int(h // PATCH * PATCH), int(w // PATCH * PATCH)]
    if min(size) < PATCH:
        raise ImageError(
            f"image of {h}×{w} px is smaller than one {PATCH}×{PATCH} DINOv2 patch "
            "after resizing; use a larger image"
        )
    return F.interpolate(image, size)
