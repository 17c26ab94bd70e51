"""XFeat (Potje et al., "XFeat: Accelerated Features for Lightweight Image Matching", CVPR 2024).

Our implementation of the sparse XFeat extractor, loading the official `xfeat.pt` (strict).
The network sees a grayscale image normalised by instance norm and has three outputs:
- a 64-d dense descriptor map at 1/8 resolution (a 1/8, 1/16, 1/32 pyramid fused at 1/8),
- keypoint logits at 1/8 with 65 channels (64 positions of an 8×8 cell + "no keypoint"), computed
  from the raw 8×8 pixel cells (only 1×1 convolutions), pixel-shuffled to a full-res heat map,
- a reliability map at 1/8 (sigmoid).
Keypoints are 5×5 maxima of the heat map above `detection_threshold`; their score is heat map ×
reliability (bilinear), as in the original; descriptors are interpolated (bicubic), L2-normalised.

The network needs H and W divisible by 32. The original resizes the image to the multiple of 32
below (slightly anisotropic). By default we instead pad the normalised image with zeros (its
mean) on the bottom and right: the keypoint head sees fixed 8×8 cells through 1×1 convolutions,
so the heat map of every cell inside the image is unchanged by the padding, keypoints stay on
input pixels, and those in the padding are dropped. `input_fit: resize` reproduces the original,
with keypoints mapped back under the pixel-centre convention x → (x + 0.5)·W/W' − 0.5.
Sampling of descriptors and reliability uses the same convention (grid_sample, align_corners=False),
where the original maps x/(W−1); the difference is below 1/16 of a feature cell.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ... import weights as weights_lib
from ...errors import ConfigError
from ..base import Extractor, conv_gray, fold_batch_norm, load_state_strict, stack_keypoint_sets


class ConvBlock(nn.Module):
    """Conv (no bias) → BatchNorm without affine → ReLU, under `layer` as in the checkpoint."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__()
        self.layer = nn.Sequential(
            nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout, affine=False),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            return self.layer(x)
        # eval: the batch norm (running statistics, no affine) folded into the conv, one pass less
        conv, bn, _ = self.layer
        x = conv_gray(x, conv, *fold_batch_norm(conv, bn))
        return F.relu(x, inplace=True)


class XFeatNet(nn.Module):
    """The XFeat network; takes an instance-normalised (B,1,H,W) image with H, W divisible by 32."""

    def __init__(self):
        super().__init__()
        c = ConvBlock
        # 1/4-resolution shortcut from the image itself, added to the output of block1
        self.skip1 = nn.Sequential(nn.AvgPool2d(4, stride=4), nn.Conv2d(1, 24, 1))
        self.block1 = nn.Sequential(c(1, 4), c(4, 8, stride=2), c(8, 8), c(8, 24, stride=2))  # 1/4
        self.block2 = nn.Sequential(c(24, 24), c(24, 24))  # 1/4
        self.block3 = nn.Sequential(c(24, 64, stride=2), c(64, 64), c(64, 64, k=1))  # 1/8
        self.block4 = nn.Sequential(c(64, 64, stride=2), c(64, 64), c(64, 64))  # 1/16
        self.block5 = nn.Sequential(
            c(64, 128, stride=2), c(128, 128), c(128, 128), c(128, 64, k=1)
        )  # 1/32
        self.block_fusion = nn.Sequential(c(64, 64), c(64, 64), nn.Conv2d(64, 64, 1))
        self.heatmap_head = nn.Sequential(
            c(64, 64, k=1), c(64, 64, k=1), nn.Conv2d(64, 1, 1), nn.Sigmoid()
        )
        self.keypoint_head = nn.Sequential(
            c(64, 64, k=1), c(64, 64, k=1), c(64, 64, k=1), nn.Conv2d(64, 65, 1)
        )
        # Match-refinement MLP of XFeat* (semi-dense mode); unused by the sparse extractor but part
        # of the checkpoint, so it is kept for strict loading.
        layers: list[nn.Module] = []
        for cin in (128, 512, 512, 512):
            layers += [
                nn.Linear(cin, 512),
                nn.BatchNorm1d(512, affine=False),
                nn.ReLU(inplace=True),
            ]
        self.fine_matcher = nn.Sequential(*layers, nn.Linear(512, 64))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """→ descriptors (B,64,H/8,W/8), keypoint logits (B,65,H/8,W/8), reliability (B,1,...)."""
        x3 = self.block3(self.block2(self.block1(x) + self.skip1(x)))
        x4 = self.block4(x3)
        x5 = self.block5(x4)
        size = x3.shape[-2:]
        fused = (
            x3 + F.interpolate(x4, size, mode="bilinear") + F.interpolate(x5, size, mode="bilinear")
        )
        feats = self.block_fusion(fused)
        reliability = self.heatmap_head(feats)
        logits = self.keypoint_head(
            F.pixel_unshuffle(x, 8)
        )  # each 8×8 cell's pixels as 64 channels
        return feats, logits, reliability


def maxima_above(heat: torch.Tensor, k: int, threshold: float) -> torch.Tensor:
    """Pixels of heat (B,1,H,W) above `threshold` that equal the max of their k×k window (ties
    kept: XFeat's rule). Few pixels pass the threshold (6 % on a typical photo), so the window max
    is taken only at those; a dense max-pool when many pass. Same mask either way."""
    above = heat > threshold
    n = int(above.sum())
    if n > above.numel() // 4:
        return above & (heat == F.max_pool2d(heat, k, stride=1, padding=k // 2))
    b, _, h, w = heat.shape
    r = k // 2
    idx = above.flatten().nonzero()[:, 0]  # flat (b, y, x)
    padded = F.pad(heat, (r, r, r, r), value=float("-inf")).flatten()
    bi, rest = idx // (h * w), idx % (h * w)
    base = bi * (h + 2 * r) * (w + 2 * r) + (rest // w) * (w + 2 * r) + rest % w
    offsets = torch.arange(k, device=heat.device)
    window = (offsets[:, None] * (w + 2 * r) + offsets[None]).flatten()
    window_max = padded[base[:, None] + window[None]].amax(1)
    keep = torch.zeros_like(above).flatten()
    keep[idx[heat.flatten()[idx] == window_max]] = True
    return keep.view_as(above)


def sample_map(
    fmap: torch.Tensor, kpts: torch.Tensor, image_size: tuple[int, int], mode: str
) -> torch.Tensor:
    """Sample a dense map (B,C,h,w) covering an image of `image_size` (W,H) at keypoints (B,N,2).

    Keypoints follow the pixel-centre convention. Returns (B,N,C). Border padding, so points near
    the edge are not blended with zeros.
    """
    w, h = image_size
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=kpts.dtype, device=kpts.device)
    grid = ((kpts + 0.5) * scale - 1.0)[:, :, None]  # (B,N,1,2), align_corners=False frame
    out = F.grid_sample(
        fmap, grid.to(fmap.dtype), mode=mode, padding_mode="border", align_corners=False
    )
    return out[..., 0].transpose(1, 2)


class XFeat(Extractor):
    default_conf = {
        "weights": None,  # None → registered "xfeat"; or a path to xfeat.pt
        "max_num_keypoints": 4096,  # None or <= 0: all
        "detection_threshold": 0.05,  # on the keypoint heat map (softmax probability)
        "nms_window_size": 5,
        "descriptor_interpolation": "bicubic",  # or "bilinear"
        "input_fit": "pad",  # "pad" (exact pixels) or "resize" (as the original) to reach /32
    }
    grayscale = False  # takes RGB and converts with the original's channel mean
    descriptor_dim = 64

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        return [conf.weights or "xfeat"]

    def _init(self, conf: DictConfig) -> None:
        if conf.input_fit not in ("pad", "resize"):
            raise ConfigError(f"xfeat input_fit must be 'pad' or 'resize', got '{conf.input_fit}'")
        if conf.descriptor_interpolation not in ("bicubic", "bilinear", "nearest"):
            raise ConfigError(
                "xfeat descriptor_interpolation must be bicubic|bilinear|nearest, "
                f"got '{conf.descriptor_interpolation}'"
            )
        self.net = XFeatNet()
        source = self.weight_names(conf)[0]
        load_state_strict(self.net, weights_lib.load_state_dict(source), source, "XFeat")
        self.net.eval()

    def train(self, mode: bool = True):
        """Keep the batch norms on their running statistics unless the extractor is trainable."""
        super().train(mode)
        if not self.conf.trainable:
            self.net.eval()
        return self

    def _prepare(self, image: torch.Tensor) -> tuple[torch.Tensor, tuple[float, float]]:
        """Gray, instance-normalised image with H, W divisible by 32; scale back to input pixels."""
        h, w = image.shape[-2:]
        x = image.mean(1, keepdim=True)  # the original's RGB → gray (channel mean)
        if self.conf.input_fit == "resize":
            nh, nw = max(32, h // 32 * 32), max(32, w // 32 * 32)
            if (nh, nw) != (h, w):
                x = F.interpolate(x, (nh, nw), mode="bilinear", align_corners=False)
            return F.instance_norm(x), (w / nw, h / nh)
        x = F.instance_norm(x)
        x = F.pad(x, (0, -w % 32, 0, -h % 32), value=0.0)
        return x, (1.0, 1.0)

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        h, w = image.shape[-2:]
        x, (sx, sy) = self._prepare(image)
        hp, wp = x.shape[-2:]
        feats, logits, reliability = self.net(x)
        feats = F.normalize(feats, dim=1)
        heat = F.pixel_shuffle(logits.softmax(1)[:, :64], 8)  # (B,1,H',W')
        if data.get("keypoints") is not None:  # describe given points (GlueStick's end points)
            kp = data["keypoints"].to(heat.dtype)
            if (sx, sy) != (1.0, 1.0):  # original pixels → network-input pixels
                kp = (kp + 0.5) / kp.new_tensor([sx, sy]) - 0.5
            mode = self.conf.descriptor_interpolation
            desc = F.normalize(sample_map(feats, kp, (wp, hp), mode), dim=-1)
            rel = sample_map(reliability, kp, (wp, hp), "bilinear")[..., 0]
            scores = sample_map(heat, kp, (wp, hp), "bilinear")[..., 0] * rel
            return {"keypoints": data["keypoints"], "keypoint_scores": scores, "descriptors": desc}
        keep = maxima_above(heat, self.conf.nms_window_size, self.conf.detection_threshold or 0.0)
        if self.conf.input_fit == "pad":  # nothing from the padding
            keep[..., h:, :] = False
            keep[..., :, w:] = False
        top = self.conf.max_num_keypoints
        top = None if top is None or top <= 0 else int(top)

        per_image = []
        for b in range(image.shape[0]):
            yx = keep[b, 0].nonzero()
            kpts = yx.flip(-1).to(heat.dtype)[None]  # (1,N,2) in network-input pixels
            rel = sample_map(reliability[b : b + 1], kpts, (wp, hp), "bilinear")[0, :, 0]
            scores = heat[b, 0, yx[:, 0], yx[:, 1]] * rel
            order = torch.argsort(scores, descending=True, stable=True)[:top]
            kpts, scores = kpts[:, order], scores[order]
            desc = sample_map(feats[b : b + 1], kpts, (wp, hp), self.conf.descriptor_interpolation)
            desc = F.normalize(desc[0], dim=-1)
            kpts = kpts[0]
            if (sx, sy) != (1.0, 1.0):
                scale = torch.tensor([sx, sy], dtype=kpts.dtype, device=kpts.device)
                kpts = (kpts + 0.5) * scale - 0.5  # pixel-centre convention
            per_image.append((kpts, scores, desc))
        return stack_keypoint_sets(per_image)
