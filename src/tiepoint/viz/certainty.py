"""A dense matcher's prediction as a picture: the certainty map, and image 1 warped onto image 0.

Drawn at the display size of image 0: the warp's grid (the model's output resolution) is
upsampled to that size in normalised coordinates (align_corners=False, so grid cells and
display pixels share their centres), and image 1 is sampled there with `grid_sample`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

from ..types import DenseResult
from .warp import save_panels


def warp_to_image0(
    img1: np.ndarray, dense: DenseResult, size0: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Image 1 (H1×W1×C float) resampled onto image 0's frame of size (W0, H0) by the dense warp
    (its grid over image 0), and the certainty at that size: (H0×W0×C, H0×W0)."""
    warp, cert = dense.grid0()
    w0, h0 = size0
    grid = torch.from_numpy(np.ascontiguousarray(warp[..., 2:])).permute(2, 0, 1)[None]
    grid = F.interpolate(grid, size=(h0, w0), mode="bilinear", align_corners=False)
    c = torch.from_numpy(np.ascontiguousarray(cert))[None, None]
    c = F.interpolate(c, size=(h0, w0), mode="bilinear", align_corners=False)[0, 0]
    im1 = torch.from_numpy(np.ascontiguousarray(img1, np.float32)).permute(2, 0, 1)[None]
    out = F.grid_sample(im1, grid.permute(0, 2, 3, 1), mode="bilinear", align_corners=False)
    return out[0].permute(1, 2, 0).numpy(), c.clamp(0, 1).numpy()


def plot_certainty(
    img0: np.ndarray,
    img1: np.ndarray,
    dense: DenseResult,
    path: str | Path,
    title: str | None = None,
    dpi: int = 100,
):
    """Three panels: image 0 | certainty over image 0 | image 1 warped onto image 0, faded to
    white where the certainty is low (as DKM's demo draws it)."""
    h0, w0 = img0.shape[:2]
    warped, cert = warp_to_image0(img1, dense, (w0, h0))
    heat = plt.get_cmap("viridis")(cert)[..., :3]
    gray = img0.mean(-1, keepdims=True)
    heat_panel = 0.35 * gray + 0.65 * heat
    warped_panel = cert[..., None] * warped + (1 - cert[..., None])
    labels = ["A", "certainty", "B warped onto A by the dense warp"]
    save_panels([img0, heat_panel, warped_panel], labels, path, title, dpi)
