"""DKM's global matcher: Gaussian-process kernel regression from image-0 features onto embedded
image-1 coordinates (`DKM:dkm/models/dkm.py` `GP`, `CosKernel`).

For features x (image 0, N×d) and y (image 1, M×d) the posterior mean of the image-1 coordinate
embedding f (M×D) is μ = K_xy (K_yy + σ²I)⁻¹ f with the cosine kernel K = exp((cos(x, y) − 1)/T).
DKMv3 uses T = 0.2, σ² = 0.1, the Fourier embedding f = cos(8π·Conv1x1(2→256)(coords)) and no
covariance features.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def grid_coords(b: int, h: int, w: int, device=None, dtype=None) -> torch.Tensor:
    """(b, 2, h, w) pixel-centre coordinates in [-1, 1] (x first), DKM's `linspace(-1+1/n, 1-1/n)`."""
    ys = torch.linspace(-1 + 1 / h, 1 - 1 / h, h, device=device, dtype=dtype)
    xs = torch.linspace(-1 + 1 / w, 1 - 1 / w, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((gx, gy))[None].expand(b, 2, h, w)


def cos_kernel(x: torch.Tensor, y: torch.Tensor, T: float, eps: float = 1e-6) -> torch.Tensor:
    """exp((cos_sim(x_i, y_j) − 1)/T) for x (B,N,d), y (B,M,d) → (B,N,M), DKM's `CosKernel`."""
    c = torch.einsum("bnd,bmd->bnm", x, y) / (
        x.norm(dim=-1)[..., None] * y.norm(dim=-1)[:, None] + eps
    )
    return ((c - 1.0) / T).exp()


class GP(nn.Module):
    """Posterior-mean kernel regression (covariance unused, as in DKMv3's `no_cov=True`)."""

    def __init__(self, gp_dim: int = 256, T: float = 0.2, sigma_noise: float = 0.1):
        super().__init__()
        self.T = T
        self.sigma_noise = sigma_noise
        self.pos_conv = nn.Conv2d(2, gp_dim, 1, 1)  # state key as in DKM: gps.<s>.pos_conv

    def coordinate_embedding(self, b: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        """cos(8π·Conv1x1(coords)) over the (h, w) grid of image 1: (b, gp_dim, h, w)."""
        coords = grid_coords(b, h, w, like.device, like.dtype)
        return torch.cos(8 * math.pi * self.pos_conv(coords))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x (B,C,h0,w0) image-0 features, y (B,C,h1,w1) image-1 features → μ (B,gp_dim,h0,w0)."""
        b, _, h0, w0 = x.shape
        _, _, h1, w1 = y.shape
        f = self.coordinate_embedding(b, h1, w1, y).flatten(2).transpose(1, 2)  # (B,M,D)
        xf, yf = x.flatten(2).transpose(1, 2), y.flatten(2).transpose(1, 2)
        K_xy = cos_kernel(xf, yf, self.T)
        K_yy = cos_kernel(yf, yf, self.T)
        eye = torch.eye(h1 * w1, device=x.device, dtype=x.dtype)
        # K_yy is a Gram matrix (PSD) plus σ²I: Cholesky is stable and cheaper than DKM's inverse
        L, info = torch.linalg.cholesky_ex(K_yy + self.sigma_noise * eye)
        if bool((info != 0).any()):  # not positive definite numerically: fall back to LU
            alpha = torch.linalg.solve(K_yy + self.sigma_noise * eye, f)
        else:
            alpha = torch.cholesky_solve(f, L)
        mu = K_xy @ alpha  # (B,N,D)
        return mu.transpose(1, 2).reshape(b, -1, h0, w0)
