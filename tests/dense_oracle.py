"""A dense matcher that knows the answer: the exact warp of a given homography.

Registered through the `package.module:Class` form (`dense_oracle:HomographyOracle`; tests/ is on
sys.path through tests/conftest.py), it lets the dense API path (sampling, coordinate conversion,
results, h5, CLI pictures) be checked against ground truth without DKM's network or weights.

Its coordinates follow PyTorch's own definition of normalised coordinates with
align_corners=False (`F.affine_grid` for the cell centres, `grid_sample`'s unnormalisation
x = ((u + 1)·W − 1)/2 for pixels), not tiepoint's conversion code, so the API is checked against
an independent statement of the convention.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tiepoint.models.base import DenseMatcher


def cell_centres(h: int, w: int) -> torch.Tensor:
    """(h, w, 2) normalised centres of an h×w grid, as `F.affine_grid` defines them."""
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64)
    return F.affine_grid(theta, [1, 1, h, w], align_corners=False)[0]


def to_pixels(u: torch.Tensor, size) -> torch.Tensor:
    return ((u + 1) * torch.tensor(size, dtype=u.dtype) - 1) / 2


def to_normalised(x: torch.Tensor, size) -> torch.Tensor:
    return (2 * x + 1) / torch.tensor(size, dtype=x.dtype) - 1


def apply_h(H: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    q = p @ H[:, :2].T + H[:, 2]
    return q[..., :2] / q[..., 2:]


class HomographyOracle(DenseMatcher):
    default_conf = {
        "H": None,  # 3×3 row-major (9 numbers), image 0 pixels → image 1 pixels
        "size0": None,  # (W, H) of the original images the homography is in
        "size1": None,
        "grid": [60, 80],  # output grid (h, w) over image 0 (and image 1 when symmetric)
        "symmetric": True,
        "weights": None,
    }

    def _init(self, conf):
        self.H = torch.tensor(list(conf.H), dtype=torch.float64).reshape(3, 3)
        self.symmetric = bool(conf.symmetric)
        self.gain = nn.Parameter(torch.ones(1))  # certainty × gain: lets a weights file show
        self.inputs = []  # shapes of the images it was given

    def _one_way(self, H, size_from, size_to):
        h, w = self.conf.grid
        u = cell_centres(h, w)
        v = to_normalised(apply_h(H, to_pixels(u, size_from)), size_to)
        inside = (v.abs() <= 1).all(-1)
        return torch.cat([u, v], -1), inside.double()

    def _forward(self, data):
        for k in ("image0", "image1"):
            im = data[k]
            assert im.ndim == 4 and im.shape[:2] == (1, 3) and 0 <= im.min() <= im.max() <= 1
            self.inputs.append(tuple(im.shape))
        s0, s1 = list(self.conf.size0), list(self.conf.size1)
        warp, cert = self._one_way(self.H, s0, s1)
        if self.symmetric:
            back, cert_b = self._one_way(torch.linalg.inv(self.H), s1, s0)
            warp = torch.cat([warp, torch.cat([back[..., 2:], back[..., :2]], -1)], 1)
            cert = torch.cat([cert, cert_b], 1)
        cert = cert * self.gain.detach().double()
        return {"warp": warp[None].float(), "certainty": cert[None].float()}


def oracle_pipeline(H: np.ndarray, size0, size1, **conf) -> dict:
    dense = {"name": "dense_oracle:HomographyOracle", "H": np.asarray(H, float).ravel().tolist()}
    dense |= {"size0": list(size0), "size1": list(size1), **conf}
    return {"dense": dense}
