"""ALIKE (Zhao et al., "ALIKE: Accurate and Lightweight Keypoint Detection and Descriptor
Extraction", IEEE TMM 2022) with the official weights, in plain torch.

Architecture (module names follow the official `models/alike-{t,s,n,l}.pth` state dicts, loaded
with `strict=True`):
- encoder: `block1` two 3×3 conv+BN+ReLU at full resolution; `block2..4` ResNet basic blocks (1×1
  conv with bias on the skip) after 2×2, 4×4, 4×4 max pooling (1/2, 1/8, 1/32);
- aggregation: 1×1 conv + ReLU per level (`conv1..4`, dim/4 channels each), bilinear upsampling
  (align_corners=True) to full resolution, concatenation;
- head: (alike-l only: `convhead1` 1×1 + ReLU) `convhead2` 1×1 → dim descriptor channels + 1 score
  channel (sigmoid); the descriptor map is L2-normalised per pixel.
- DKD: 5×5 NMS maxima of the score map above `detection_threshold` (at most `max_num_keypoints`, the
  best first) or the top `max_num_keypoints`, refined by a soft-argmax over the (2r+1)² window
  (temperature 0.1); the score is the map sampled bilinearly at the refined point and the
  descriptor the normalised map sampled bilinearly there, normalised again.

The image is zero-padded on the bottom and right to a multiple of 32 and the maps cropped back, as
in the official code. The official `[-1, 1]` coordinates use align_corners=True, so pixel =
(u + 1)/2·(W − 1) already has pixel centres at integers; we stay in pixels throughout.

Differences from the official code: keypoints are always sorted by score; top-k mode never returns
suppressed (zero-score) pixels when there are fewer maxima than k.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ... import weights as weights_lib
from ...config import lookup
from ...errors import ConfigError, ImageError
from ..base import Extractor, load_state_strict, stack_keypoint_sets
from .aliked import refinement_window, simple_nms

# c1, c2, c3, c4, dim, single_head (official `configs` of alike.py)
CONFIGS = {
    "alike-t": (8, 16, 32, 64, 64, True),
    "alike-s": (8, 16, 48, 96, 96, True),
    "alike-n": (16, 32, 64, 128, 128, True),
    "alike-l": (32, 64, 128, 128, 128, False),
}
PAD_TO = 32


def _conv3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ConvBlock(nn.Module):
    """Two 3×3 conv + BN + ReLU (the full-resolution stem)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1, self.bn1 = _conv3(cin, cout), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv3(cout, cout), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(x)))


class ResBlock(ConvBlock):
    """ResNet basic block with a 1×1 conv (with bias) on the skip."""

    def __init__(self, cin: int, cout: int):
        super().__init__(cin, cout)
        self.downsample = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class ALIKE(Extractor):
    """ALIKE keypoints and 64/96/128-d descriptors from an RGB image in [0, 1]."""

    default_conf = {
        "model_name": "alike-n",  # alike-t | alike-s | alike-n | alike-l
        "weights": None,  # None → the registered official file `model_name`; or a checkpoint path
        "max_num_keypoints": 2048,  # threshold mode: the best this many (official n_limit)
        "detection_threshold": 0.2,  # > 0: threshold mode; <= 0: top `max_num_keypoints`
        "nms_radius": 2,  # official DKD: NMS is always 5×5 and the refinement window 2r+1
        "subpixel": True,  # soft-argmax refinement and bilinear descriptors (official demo)
        "temperature": 0.1,
    }
    grayscale = False
    descriptor_dim = 128

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        return [conf.weights or conf.model_name]

    def _init(self, conf: DictConfig) -> None:
        c1, c2, c3, c4, dim, single_head = lookup(CONFIGS, conf.model_name, "ALIKE model_name")
        if int(conf.nms_radius) < 1:
            raise ConfigError(f"ALIKE nms_radius must be >= 1, got {conf.nms_radius}")
        self.descriptor_dim = dim
        self.block1 = ConvBlock(3, c1)
        self.block2 = ResBlock(c1, c2)
        self.block3 = ResBlock(c2, c3)
        self.block4 = ResBlock(c3, c4)
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(c, dim // 4, 1, bias=False) for c in (c1, c2, c3, c4)
        )
        if not single_head:
            self.convhead1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.single_head = single_head
        self.convhead2 = nn.Conv2d(dim, dim + 1, 1, bias=False)
        self.register_buffer("window", refinement_window(int(conf.nms_radius)), persistent=False)
        self.load_weights(self.weight_names(conf)[0])

    def load_weights(self, source: str) -> None:
        """Load an official ALIKE state dict (keys match our module names one to one)."""
        load_state_strict(self, weights_lib.load_state_dict(source), source, self.conf.model_name)

    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image (B,3,H,W) → score map (B,H,W), L2-normalised descriptor map (B,D,H,W)."""
        h, w = image.shape[-2:]
        x = F.pad(image, (0, -w % PAD_TO, 0, -h % PAD_TO))  # zeros, bottom/right, as the official
        x1 = self.block1(x)
        x2 = self.block2(F.max_pool2d(x1, 2))
        x3 = self.block3(F.max_pool2d(x2, 4))
        x4 = self.block4(F.max_pool2d(x3, 4))
        size = x1.shape[-2:]
        feats = [F.relu(self.conv1(x1))]
        for conv, xi in zip((self.conv2, self.conv3, self.conv4), (x2, x3, x4)):
            feats.append(F.interpolate(F.relu(conv(xi)), size, mode="bilinear", align_corners=True))
        x = torch.cat(feats, 1)
        if not self.single_head:
            x = F.relu(self.convhead1(x))
        x = self.convhead2(x)[..., :h, :w]
        return torch.sigmoid(x[:, -1]), F.normalize(x[:, :-1], p=2, dim=1)

    def detect(self, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """DKD on one score map (H,W) → keypoints (N,2) in pixels and their scores (N,), best first."""
        h, w = scores.shape
        r = int(self.conf.nms_radius)
        nms = simple_nms(scores.detach()[None], 2)[0]  # the official DKD hard-codes radius 2
        nms[: r + 1] = 0  # the official border: r + 1 on the top/left, r on the bottom/right
        nms[:, : r + 1] = 0
        nms[h - r :] = 0
        nms[:, w - r :] = 0
        flat = nms.flatten()
        th = self.conf.detection_threshold
        limit = self.conf.max_num_keypoints
        limit = None if limit is None or limit <= 0 else int(limit)
        if th is not None and th > 0:
            keep = flat > th
            if not keep.any():  # nothing above the threshold: the mean score, as the official
                keep = flat > scores.mean()
        elif limit is not None:
            keep = flat > 0
        else:
            keep = flat > scores.mean()
        idx = keep.nonzero()[:, 0]
        idx = idx[flat[idx].argsort(descending=True, stable=True)][:limit]
        ix, iy = idx % w, idx.div(w, rounding_mode="floor")
        kpts = torch.stack([ix, iy], -1).to(scores.dtype)
        if self.conf.subpixel:
            win = self.window.to(scores.dtype)
            wx = (ix[:, None] + win[:, 0].long()).clamp(0, w - 1)
            wy = (iy[:, None] + win[:, 1].long()).clamp(0, h - 1)
            patch = scores[wy, wx]  # the border keeps every window inside the map
            e = ((patch - patch.detach().amax(-1, keepdim=True)) / self.conf.temperature).exp()
            kpts = kpts + (e @ win) / e.sum(-1, keepdim=True)
        kscores = _bilinear(scores[None], kpts)[0]
        order = kscores.argsort(descending=True, stable=True)
        return kpts[order], kscores[order]

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        if min(image.shape[-2:]) < 2 * int(self.conf.nms_radius) + 4:
            raise ImageError(f"ALIKE: image {tuple(image.shape[-2:])} is too small")
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        scores, desc_map = self.dense(image.to(self.convhead2.weight.dtype))
        out = []
        for s, dmap in zip(scores, desc_map):
            kpts, ks = self.detect(s)
            if self.conf.subpixel:
                desc = _bilinear(dmap, kpts)
            else:
                desc = dmap[:, kpts[:, 1].long(), kpts[:, 0].long()]
            out.append((kpts, ks, F.normalize(desc, p=2, dim=0).t()))
        return stack_keypoint_sets(out)


def _bilinear(fmap: torch.Tensor, xy: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of (C,H,W) at pixel points (N,2) (centres at integers) → (C,N)."""
    h, w = fmap.shape[-2:]
    scale = xy.new_tensor([max(w - 1, 1), max(h - 1, 1)])
    grid = (2 * xy / scale - 1).view(1, 1, -1, 2)
    return F.grid_sample(fmap[None], grid, "bilinear", align_corners=True)[0, :, 0]
