"""Photometric augmentations (kornia.augmentation) for synthetic training pairs.

Geometry is never touched here — only intensities — so ground truth stays exact. Presets:
- `lg`: the mix used for LightGlue homography pre-training (gamma, colour, blur, noise, JPEG,
  brightness/contrast drops, CLAHE), each step with its own small probability;
- `dark`: night-like: strong darkening, low contrast, sensor noise, blur;
- `identity`: nothing.
Randomness comes from torch's global generator; datasets fork and seed it per item.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import lookup

PRESETS = ("lg", "dark", "identity")


def _lg(rgb: bool) -> list[tuple[float, nn.Module]]:
    import kornia.augmentation as K

    steps = [(0.1, K.RandomGamma(gamma=(0.6, 1.6), p=1.0))]
    if rgb:
        steps += [(0.1, K.ColorJiggle(saturation=0.3, hue=0.05, p=1.0))]
    steps += [
        (0.1, K.RandomMotionBlur(kernel_size=(3, 11), angle=45.0, direction=0.5, p=1.0)),
        (0.1, K.RandomGaussianBlur(kernel_size=(3, 9), sigma=(0.1, 2.0), p=1.0)),
        (0.1, K.RandomGaussianNoise(mean=0.0, std=0.03, p=1.0)),
        (0.5, K.RandomBrightness(brightness=(0.6, 1.0), p=1.0)),
        (0.5, K.RandomContrast(contrast=(0.7, 1.0), p=1.0)),
        (0.2, K.RandomClahe(clip_limit=(1.0, 4.0), p=1.0)),
    ]
    return steps


def _dark(rgb: bool) -> list[tuple[float, nn.Module]]:
    import kornia.augmentation as K

    return [
        (0.6, K.RandomGamma(gamma=(1.2, 2.5), p=1.0)),
        (0.8, K.RandomBrightness(brightness=(0.3, 0.9), p=1.0)),
        (0.5, K.RandomContrast(contrast=(0.4, 1.0), p=1.0)),
        (0.5, K.RandomGaussianNoise(mean=0.0, std=0.04, p=1.0)),
        (0.2, K.RandomMotionBlur(kernel_size=(3, 9), angle=45.0, direction=0.5, p=1.0)),
        (0.2, K.RandomGaussianBlur(kernel_size=(3, 7), sigma=(0.1, 1.5), p=1.0)),
    ]


class Photometric(nn.Module):
    """Apply a preset to a (1,C,H,W) image in [0,1] with overall probability `p`."""

    def __init__(self, name: str = "lg", p: float = 0.95, rgb: bool = True):
        super().__init__()
        lookup(PRESETS, name, "photometric augmentation")
        self.p = p
        steps = {"lg": _lg, "dark": _dark, "identity": lambda rgb: []}[name](rgb)
        self.probs = [q for q, _ in steps]
        self.steps = nn.ModuleList([m for _, m in steps])

    @torch.no_grad()
    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # Dice are rolled here rather than by kornia, whose p<1 still pays for the transform.
        if len(self.steps) == 0 or torch.rand(()) >= self.p:
            return image
        for q, step in zip(self.probs, self.steps):
            if torch.rand(()) < q:
                image = step(image)
        return image.clamp(0, 1)
