"""A dense oracle for several views of one plane: it recognises which of its images it was given
and outputs the exact warp of that pair's homography (tests/dense_oracle.py, pair by pair).

Conf: `images` (paths), `H` (one 3×3 per image, row-major: reference-plane pixels → that image's
pixels), `size0` = `size1` = (W, H) shared by all. The pair's homography is H_j · H_i⁻¹. An input is
recognised as the stored image it is closest to (mean absolute difference at the input's size),
so the loader's resizing does not matter.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from dense_oracle import HomographyOracle
from PIL import Image


class PlanarSceneOracle(HomographyOracle):
    default_conf = {"images": None, "H": None, "size0": None, "size1": None}

    def _init(self, conf):
        self.Hs = [torch.tensor(list(h), dtype=torch.float64).reshape(3, 3) for h in conf.H]
        self.symmetric = bool(conf.symmetric)
        self.gain = torch.nn.Parameter(torch.ones(1))
        self.inputs = []
        self.refs = [
            torch.from_numpy(np.asarray(Image.open(p).convert("RGB"), np.float32) / 255).permute(
                2, 0, 1
            )[None]
            for p in conf.images
        ]

    def _which(self, im: torch.Tensor) -> int:
        size = im.shape[-2:]
        d = [(F.interpolate(r, size=size, mode="area") - im.cpu()).abs().mean() for r in self.refs]
        return int(np.argmin(d))

    def _forward(self, data):
        i, j = self._which(data["image0"]), self._which(data["image1"])
        self.H = self.Hs[j] @ torch.linalg.inv(self.Hs[i])
        return super()._forward(data)
