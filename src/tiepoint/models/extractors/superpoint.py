"""SuperPoint (DeTone et al., CVPRW 2018): VGG-style encoder, 65-channel detector, 256-d descriptor.

Our implementation; it loads the official MagicLeap / LightGlue `superpoint_v1.pth` (flat keys
`conv1a.weight` … `convDb.bias`). The weights are under a non-commercial licence, not bundled:
`weights: None` resolves the registered name `superpoint` (cache or LightGlue release URL), or
give a path. Detection: softmax over 65 channels, drop the "no keypoint" bin, pixel-shuffle to
full resolution, iterative max-pool NMS (radius `nms_radius`), drop a `remove_borders` margin,
threshold, top-k by score. Descriptors are sampled bilinearly at the keypoints under the
pixel-centre convention (feature cell i covers pixels 8i … 8i+7, centre 8i + 3.5) and
L2-normalised. The official code samples with a slightly different affine map
(align_corners=True); the gap is below 1/8 cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ... import weights as weights_lib
from ...images import rgb_to_gray
from ..base import Extractor, conv_gray, load_state_strict, stack_keypoint_sets


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Zero every score that is not kept by max-pool NMS with a (2r+1)² window.

    Local maxima are kept; then, twice, the maxima of what lies outside their windows are added, so
    a strong point does not hide a weaker distinct maximum just beyond its reach.
    """

    def pool(x: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(x, 2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    keep = scores == pool(scores)
    for _ in range(2):
        suppressed = pool(keep.float()) > 0
        rest = torch.where(suppressed, zeros, scores)
        keep = keep | ((rest == pool(rest)) & ~suppressed)
    return torch.where(keep, scores, zeros)


def sample_descriptors(desc: torch.Tensor, kpts: torch.Tensor, stride: int = 8) -> torch.Tensor:
    """Bilinear sample of a map (B,C,h,w) of `stride`-pixel cells at keypoints (B,N,2) → (B,N,C)."""
    h, w = desc.shape[-2:]
    size = torch.tensor([w * stride, h * stride], dtype=kpts.dtype, device=kpts.device)
    grid = (2 * (kpts + 0.5) / size - 1)[:, :, None]
    out = F.grid_sample(
        desc, grid.to(desc.dtype), mode="bilinear", padding_mode="border", align_corners=False
    )
    return out[..., 0].transpose(1, 2)


def convert_state_dict(state: dict) -> dict:
    """The official `superpoint_v1.pth` as it is; GIM's checkpoints (Lightning `state_dict` whose
    `superpoint.*` keys sit next to LightGlue's `model.*`): the `superpoint.` part, unprefixed."""
    if isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if any(k.startswith("superpoint.") for k in state):
        state = {
            k[len("superpoint.") :]: v for k, v in state.items() if k.startswith("superpoint.")
        }
    return state


class SuperPointNet(nn.Module):
    """The network, with the layer names of the official checkpoint."""

    def __init__(self, descriptor_dim: int = 256):
        super().__init__()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.conv1a = nn.Conv2d(1, c1, 3, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, 3, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, 3, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, 3, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, 3, padding=1)
        self.convPa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convPb = nn.Conv2d(c5, 65, 1)
        self.convDa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convDb = nn.Conv2d(c5, descriptor_dim, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,1,H,W), H, W divisible by 8 → logits (B,65,H/8,W/8), raw descriptors (B,D,H/8,W/8)."""
        relu, pool = F.relu, F.max_pool2d
        x = pool(relu(self.conv1b(relu(conv_gray(x, self.conv1a)))), 2, 2)
        x = pool(relu(self.conv2b(relu(self.conv2a(x)))), 2, 2)
        x = pool(relu(self.conv3b(relu(self.conv3a(x)))), 2, 2)
        x = relu(self.conv4b(relu(self.conv4a(x))))
        logits = self.convPb(relu(self.convPa(x)))
        desc = self.convDb(relu(self.convDa(x)))
        return logits, desc


class SuperPoint(Extractor):
    default_conf = {
        "weights": None,  # None → registered "superpoint" (superpoint_v1.pth); or a path
        "max_num_keypoints": None,  # None or <= 0: every keypoint above the threshold
        "detection_threshold": 0.0005,
        "nms_radius": 4,
        "remove_borders": 4,
    }
    grayscale = True
    descriptor_dim = 256

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        return [conf.weights or "superpoint"]

    def _init(self, conf: DictConfig) -> None:
        self.net = SuperPointNet(self.descriptor_dim)
        source = self.weight_names(conf)[0]
        state = convert_state_dict(weights_lib.load_state_dict(source))
        load_state_strict(self.net, state, source, "SuperPoint")

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        image = rgb_to_gray(image)
        h, w = image.shape[-2:]
        # zero-pad to /8 (what the convolutions see beyond the border anyway), crop the maps back
        logits, desc = self.net(F.pad(image, (0, -w % 8, 0, -h % 8)))
        scores = F.pixel_shuffle(logits.softmax(1)[:, :64], 8)[:, 0, :h, :w]  # (B,H,W)
        scores = simple_nms(scores[:, None], self.conf.nms_radius)[:, 0]
        b = self.conf.remove_borders
        if b:
            border = torch.zeros_like(scores, dtype=torch.bool)
            border[:, :b] = border[:, -b:] = border[:, :, :b] = border[:, :, -b:] = True
            scores = scores.masked_fill(border, 0.0)
        desc = F.normalize(desc, dim=1)
        top = self.conf.max_num_keypoints
        top = None if top is None or top <= 0 else int(top)

        if "keypoints" in data:  # given points (GIM's zero-shot training): describe them only
            kpts = data["keypoints"].to(image.dtype)
            g = 2 * kpts / kpts.new_tensor([max(w - 1, 1), max(h - 1, 1)]) - 1
            s = F.grid_sample(scores[:, None], g[:, None], "bilinear", align_corners=True)[:, 0, 0]
            d = F.normalize(sample_descriptors(desc, kpts), dim=-1)
            return {"keypoints": kpts, "keypoint_scores": s, "descriptors": d}
        per_image = []
        for i in range(image.shape[0]):
            yx = (scores[i] > (self.conf.detection_threshold or 0.0)).nonzero()
            s = scores[i][yx[:, 0], yx[:, 1]]
            order = torch.argsort(s, descending=True, stable=True)[:top]
            kpts = yx[order].flip(-1).to(image.dtype)
            d = F.normalize(sample_descriptors(desc[i : i + 1], kpts[None])[0], dim=-1)
            per_image.append((kpts, s[order], d))
        return stack_keypoint_sets(per_image)
