"""Gaussian diffusion over a partial assignment matrix, as DiffGlue (Zhang & Ma, ACM MM 2024) uses it.

The diffused variable is the (M+1)×(N+1) assignment with dustbins, mapped affinely from {0, 1} to
{−scale/2, +scale/2} (±1 for the reference scale 2). The dustbin corner carries no information, so it
is pinned to 0 and never noised. The model predicts x₀ directly; a linear β schedule over T steps
(improved-DDPM rescaling, so any T gives the same curve as the classic 1000 steps) noises it, and a
deterministic DDIM (η = 0) walks back over a few kept timesteps.

Everything here is network-agnostic: the matcher passes a `denoise(x_t, t) -> x̂₀` callable.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ...errors import ConfigError


def linear_betas(steps: int) -> torch.Tensor:
    """β_t linear from 1e-4·s to 0.02·s with s = 1000/steps (float64), as in improved DDPM."""
    s = 1000.0 / steps
    return torch.linspace(1e-4 * s, 0.02 * s, steps, dtype=torch.float64)


def kept_timesteps(steps: int, count: int) -> list[int]:
    """`count` timesteps of a `steps`-step process, evenly spread over [0, steps−1], descending.

    1 keeps only t=0, 2 keeps {steps−1, 0}: the first is pure noise, the last is (almost) clean.
    """
    if not 1 <= count <= steps:
        raise ConfigError(f"sampling_steps={count} must be in [1, {steps}]")
    if count == 1:
        return [0]
    stride = (steps - 1) / (count - 1)
    return sorted({round(i * stride) for i in range(count)}, reverse=True)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding (B,) → (B, dim): cosines of the geometric frequencies first, then sines."""
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half
    )
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], -1)
    return emb


def assignment_to_x0(
    gt_assignment: torch.Tensor,
    gt_matches0: torch.Tensor,
    gt_matches1: torch.Tensor,
    scale: float = 2.0,
) -> torch.Tensor:
    """Ground truth → x₀ (B,1,M+1,N+1) in the diffusion domain.

    Inner block: the 0/1 assignment; last column: 1 for points of image 0 labelled unmatched (−1),
    last row likewise for image 1. Ignored points (−2) are 0 in their dustbin. Every entry except
    the corner is mapped x → (x − ½)·scale; the corner stays 0.
    """
    b, m, n = gt_assignment.shape
    x = gt_assignment.new_zeros((b, m + 1, n + 1), dtype=torch.float32)
    x[:, :m, :n] = gt_assignment.float()
    x[:, :m, n] = (gt_matches0 == -1).float()
    x[:, m, :n] = (gt_matches1 == -1).float()
    x = (x - 0.5) * scale
    x[:, m, n] = 0.0
    return x[:, None]


def log_assignment_to_x0(log_assignment: torch.Tensor, scale: float = 2.0) -> torch.Tensor:
    """A matcher's log-assignment (B,M+1,N+1) → its x̂₀ prediction (B,1,M+1,N+1): (exp − ½)·scale,
    with the corner left at the head's value (0), exactly as the reference does."""
    x = (log_assignment.exp() - 0.5) * scale
    x[:, -1, -1] = log_assignment[:, -1, -1]
    return x[:, None]


@dataclass
class DiffusionSchedule:
    """Forward process q(x_t | x₀) = N(√ᾱ_t·x₀, (1−ᾱ_t)·I) over `steps` steps, and DDIM back."""

    steps: int = 4096
    scale: float = 2.0  # x₀ ∈ {−scale/2, +scale/2}; predictions are clamped to that range

    def __post_init__(self):
        if self.steps < 2:
            raise ConfigError(f"diffusion_steps={self.steps} must be at least 2")
        self.betas = linear_betas(self.steps)
        self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)

    def alpha_bar(self, t: torch.Tensor, ndim: int = 4) -> torch.Tensor:
        """ᾱ_t for integer timesteps (B,), shaped to broadcast over (B, 1, M+1, N+1); float32."""
        a = self.alphas_cumprod.to(t.device)[t.long()].float()
        return a.view(-1, *([1] * (ndim - 1)))

    def network_time(self, t: torch.Tensor) -> torch.Tensor:
        """Integer timestep → the float the network sees: t·1000/steps ∈ [0, 1000)."""
        return t.float() * (1000.0 / self.steps)

    def sample_timesteps(
        self, batch: int, device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Uniform t ∈ {0, …, steps−1}; the uniform sampler's importance weights are all 1."""
        return torch.randint(0, self.steps, (batch,), generator=generator).to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x₀ + √(1−ᾱ_t)·ε, with ε zeroed at the corner so it stays exactly 0."""
        noise = noise.clone()
        noise[..., -1, -1] = 0.0
        a = self.alpha_bar(t, x0.dim())
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(-0.5 * self.scale, 0.5 * self.scale)

    def initial_noise(self, shape, generator: torch.Generator | None, device) -> torch.Tensor:
        """The sampler's start: N(0, I) clamped to ±scale/2, corner 0 (the reference's choice).

        Drawn on the CPU so a seed gives the same matrix on every device."""
        x = self.clamp(torch.randn(*shape, generator=generator))
        x[..., -1, -1] = 0.0
        return x.to(device)

    def ddim_step(
        self, x_t: torch.Tensor, x0: torch.Tensor, t: int, t_prev: int | None
    ) -> torch.Tensor:
        """Deterministic DDIM update (η = 0) from x_t to x_{t_prev} given the prediction x̂₀.

        ε̂ = (x_t − √ᾱ_t·x̂₀)/√(1−ᾱ_t);  x_{t_prev} = √ᾱ_prev·x̂₀ + √(1−ᾱ_prev)·ε̂; t_prev=None → x̂₀.
        """
        if t_prev is None:
            return x0
        a_t = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[t_prev])
        eps = (x_t - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
        x = math.sqrt(a_prev) * x0 + math.sqrt(1.0 - a_prev) * eps
        x[..., -1, -1] = 0.0
        return x


def ddim_sample(
    denoise: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict]],
    schedule: DiffusionSchedule,
    x_T: torch.Tensor,
    sampling_steps: int = 1,
) -> tuple[torch.Tensor, dict]:
    """Run `denoise(x_t, t) -> (x̂₀, outputs)` at `sampling_steps` kept timesteps, high t first.

    Returns the last x̂₀ (clamped) and the outputs of the last call (made at t = 0). With one step
    this is the reference inference: a single call at t = 0 on the start matrix.
    """
    ts = kept_timesteps(schedule.steps, sampling_steps)
    x = x_T
    out: dict = {}
    x0 = x_T
    for k, t in enumerate(ts):
        t_batch = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        x0, out = denoise(x, t_batch)
        x0 = schedule.clamp(x0)
        x = schedule.ddim_step(x, x0, t, ts[k + 1] if k + 1 < len(ts) else None)
    return x0, out
