"""DINOv2 backbone: official key layout, attention against a loop, the positional-embedding
interpolation against a hand computation, input checks. (Parity with facebookresearch/dinov2 on
the same random weights: benchmarks/dinov2_parity.py, numbers in docs/reasoning.md.)"""

from __future__ import annotations

import math

import pytest
import torch

from tiepoint.errors import ImageError
from tiepoint.models.backbones.dinov2 import GRID, Attention, DINOv2, floor_to_patch


def _official_keys(depth: int, ffn: tuple[str, ...]) -> set[str]:
    """The key set of an official `dinov2_vit*14_pretrain.pth` (hub model, no registers)."""
    keys = {"cls_token", "pos_embed", "mask_token", "patch_embed.proj.weight"}
    keys |= {"patch_embed.proj.bias", "norm.weight", "norm.bias"}
    per_block = ["norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias"]
    per_block += ["attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight"]
    per_block += ["norm2.bias", "ls2.gamma", *ffn]
    return keys | {f"blocks.{i}.{k}" for i in range(depth) for k in per_block}


def test_official_key_layout():
    mlp = ("mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias")
    s = DINOv2("dinov2_vits14").state_dict()
    assert set(s) == _official_keys(12, mlp)
    assert s["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    assert s["mask_token"].shape == (1, 384)
    assert s["blocks.0.mlp.fc1.weight"].shape == (1536, 384)
    with torch.device("meta"):  # ViT-g without allocating 1.1 B parameters
        g = DINOv2("dinov2_vitg14").state_dict()
    swiglu = ("mlp.w12.weight", "mlp.w12.bias", "mlp.w3.weight", "mlp.w3.bias")
    assert set(g) == _official_keys(40, swiglu)
    assert g["blocks.39.mlp.w12.weight"].shape == (2 * 4096, 1536)  # (6144·2/3 + 7)//8·8 = 4096
    assert g["blocks.0.mlp.w3.weight"].shape == (1536, 4096)


def test_attention_against_loop():
    torch.manual_seed(0)
    att = Attention(24, heads=3)
    x = torch.randn(2, 7, 24)
    qkv = att.qkv(x)
    out = torch.zeros(2, 7, 24)
    for b in range(2):
        for h in range(3):
            sl = slice(8 * h, 8 * h + 8)
            q, k, v = qkv[b, :, sl], qkv[b, :, 24:48][:, sl], qkv[b, :, 48:][:, sl]
            for i in range(7):
                w = torch.softmax(torch.stack([q[i] @ k[j] for j in range(7)]) / math.sqrt(8), 0)
                out[b, i, sl] = (w[:, None] * v).sum(0)
    torch.testing.assert_close(att(x), att.proj(out), atol=1e-5, rtol=1e-5)


def _bicubic_1d(values: list[float], x: float) -> float:
    """Keys' cubic convolution (a = −0.75, PyTorch's), border taps clamped, at source coord x."""
    a, x0 = -0.75, math.floor(x)
    t = x - x0

    def k(d):
        d = abs(d)
        if d <= 1:
            return ((a + 2) * d - (a + 3)) * d * d + 1
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a if d < 2 else 0.0

    n = len(values)
    return sum(k(t - j) * values[min(max(x0 + j, 0), n - 1)] for j in (-1, 0, 1, 2))


def test_pos_embed_interpolation_matches_hand_computation():
    """Rows of a positional embedding that varies along the grid's rows only (values i²/10):
    each output row must be the 1-D cubic convolution at source coordinate (i + 0.5) / s − 0.5
    with the *offset* scale s = (h/14 + 0.1) / 37 (not h/14 / 37)."""
    model = DINOv2("dinov2_vits14")
    rows = [i * i / 10 for i in range(GRID)]
    with torch.no_grad():
        grid = torch.tensor(rows)[:, None, None].expand(GRID, GRID, 384)
        model.pos_embed[0, 1:] = grid.reshape(-1, 384)
        model.pos_embed[0, 0] = 5.0
    h0, w0 = 24, 46
    pos = model.interpolate_pos_encoding(1 + h0 * w0, 14 * h0, 14 * w0)
    assert pos.shape == (1, 1 + h0 * w0, 384)
    assert torch.all(pos[0, 0] == 5.0)
    got = pos[0, 1:, 0].reshape(h0, w0)
    s = (h0 + 0.1) / GRID
    for i in range(h0):
        expected = _bicubic_1d(rows, (i + 0.5) / s - 0.5)
        torch.testing.assert_close(got[i], torch.full((w0,), expected), atol=1e-3, rtol=1e-5)
    without_offset = _bicubic_1d(rows, (10 + 0.5) / (h0 / GRID) - 0.5)
    assert abs(got[10, 5].item() - without_offset) > 0.05  # the offset is visible
    # the square training size is returned untouched (no resampling at all)
    assert model.interpolate_pos_encoding(1 + GRID * GRID, 518, 518) is model.pos_embed


def test_patch_tokens_shape_and_input_checks():
    model = DINOv2("dinov2_vits14").eval()
    with torch.no_grad():
        tokens = model(torch.rand(1, 3, 42, 56))
    assert tokens.shape == (1, 384, 3, 4)
    # the final LayerNorm is applied: each token has ~zero mean and unit variance before affine
    with torch.no_grad():
        model.norm.weight.fill_(1.0)
        model.norm.bias.zero_()
        t = model(torch.rand(1, 3, 28, 28))
    torch.testing.assert_close(t.mean(1), torch.zeros(1, 2, 2), atol=1e-5, rtol=0)
    with pytest.raises(ImageError, match="multiples of 14"):
        model(torch.rand(1, 3, 30, 28))
    assert floor_to_patch(torch.rand(1, 3, 45, 31)).shape[-2:] == (42, 28)
    with pytest.raises(ImageError, match="smaller than one 14×14"):
        floor_to_patch(torch.rand(1, 3, 13, 500))
