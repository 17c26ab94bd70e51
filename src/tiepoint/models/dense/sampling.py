"""Turning a dense warp into matches (DKM's `sample`) and normalised coordinates into pixels.

A dense matcher gives, for every cell of a grid, a match (x0, y0, x1, y1) in DKM's normalised
coordinates (align_corners=False: −1 is the left edge of the left pixel, +1 the right edge of the
right one) and a certainty in [0, 1]. `sample` draws matches from it as DKM does:

- `threshold_balanced` (DKM's default): certainties above `thresh` become 1; draw 4·num
  candidates by certainty (multinomial, no replacement); estimate the density of the candidates
  with a Gaussian KDE over the 4-D matches (std 0.1); draw num of them with p = 1/(density + 1)
  (p = 1e-7 where the density is below 10, i.e. isolated matches are almost never kept), which
  spreads the matches over the image instead of piling them where the certainty is flat at 1.
- `threshold`: the same without the balancing step; `pow`: draw by certainty^(1/3);
- `naive`: draw uniformly (DKM: `ones_like(certainty)`).

Differences from DKM, on purpose: cells of certainty exactly 0 (DKM zeroes the warp outside
[-1, 1]; GIM zeroes black pixels) are never drawn, in any mode. DKM's multinomial fails when there
are fewer such cells than asked for and GIM adds an epsilon so it does not, returning certainty-0
"matches"; here fewer matches come back, and none when every certainty is 0 (a texture-less
image). The certainty returned is the model's own (GIM's choice; DKM returns the thresholded 1s),
so it can serve as a match score. Draws use `generator` (a `torch.Generator`), so a seeded
generator gives the same matches every time.
"""

from __future__ import annotations

import numpy as np
import torch

from ...config import lookup

MODES = ("threshold_balanced", "threshold", "pow", "naive")
KDE_STD = 0.1
EXPANSION = 4  # candidates per asked-for match in the balanced modes
MIN_DENSITY = 10.0  # "at least 10 perfect neighbours, or around 100 ok ones" (DKM)
KDE_CHUNK = 1 << 24  # pairwise distances held at once (64 MB of float32)


def kde(x: torch.Tensor, std: float = KDE_STD) -> torch.Tensor:
    """Gaussian kernel density Σ_j exp(−|x_i − x_j|² / 2σ²) of each row of `x` (N, D), over all
    pairs (DKM's full cdist), computed in row blocks so 4·10⁴ candidates fit in memory."""
    x = x.float()
    out = torch.empty(len(x), device=x.device)
    step = max(1, KDE_CHUNK // max(len(x), 1))
    for i in range(0, len(x), step):
        d2 = torch.cdist(x[i : i + step], x).square_()
        out[i : i + step] = d2.mul_(-0.5 / std**2).exp_().sum(-1)
    return out


def _weights(certainty: torch.Tensor, mode: str, thresh: float) -> torch.Tensor:
    if mode.startswith("threshold"):
        return torch.where(certainty > thresh, torch.ones_like(certainty), certainty)
    if mode == "pow":
        return certainty.pow(1 / 3)
    return (certainty > 0).to(certainty.dtype)  # naive


def sample(
    warp: torch.Tensor,
    certainty: torch.Tensor,
    num: int,
    mode: str = "threshold_balanced",
    thresh: float = 0.05,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw up to `num` matches from a dense warp (..., 4) and certainty (...) of one image pair.

    Returns matches (K, 4) in normalised coordinates and their certainties (K,), K ≤ num (fewer
    when fewer cells have a certainty above 0).
    """
    mode = lookup(MODES, mode, "sample mode")
    matches = warp.reshape(-1, 4)
    cert = certainty.reshape(-1).float()
    if len(cert) != len(matches):
        raise ValueError(f"warp {tuple(warp.shape)} and certainty {tuple(certainty.shape)} differ")
    cert = torch.nan_to_num(cert, nan=0.0).clamp_(0.0, 1.0)  # a NaN must never be drawn
    w = _weights(cert, mode, thresh)
    balanced = mode.endswith("_balanced")
    n_drawable = int((w > 0).sum())
    k = min(int(num) * (EXPANSION if balanced else 1), n_drawable)
    if num <= 0 or k == 0:
        return matches[:0], cert[:0]
    idx = torch.multinomial(w, k, replacement=False, generator=generator)
    if balanced:
        density = kde(matches[idx])
        p = 1.0 / (density + 1.0)
        p[density < MIN_DENSITY] = 1e-7
        keep = torch.multinomial(p, min(int(num), k), replacement=False, generator=generator)
        idx = idx[keep]
    return matches[idx], cert[idx]


def _scale(size, like) -> torch.Tensor | np.ndarray:
    s = [float(size[0]) / 2, float(size[1]) / 2]
    if isinstance(like, torch.Tensor):
        return torch.tensor(s, dtype=like.dtype, device=like.device)
    return np.asarray(s, dtype=np.result_type(np.asarray(like).dtype, np.float32))


def to_pixel_coordinates(matches, size0: tuple[int, int], size1: tuple[int, int]):
    """Normalised matches (K, 4) → points (K, 2) in image 0 and image 1 of sizes (W, H), in
    tiepoint's convention (pixel centres at integers).

    DKM's rule x = W/2·(u + 1) puts pixel *edges* at integers (u = −1 → 0, the left edge);
    subtracting 0.5 moves the centre of the left pixel (u = −1 + 1/W) to 0. Tensors or arrays.
    """
    m0, m1 = matches[..., 0:2], matches[..., 2:4]
    p0 = (m0 + 1) * _scale(size0, matches) - 0.5
    p1 = (m1 + 1) * _scale(size1, matches) - 0.5
    return p0, p1


def to_normalized_coordinates(points, size: tuple[int, int]):
    """Inverse of `to_pixel_coordinates` for one image: points (K, 2) in pixels → [-1, 1]."""
    return (points + 0.5) / _scale(size, points) - 1


__all__ = ["MODES", "kde", "sample", "to_pixel_coordinates", "to_normalized_coordinates"]
