"""DISK (Tyszkiewicz et al., NeurIPS 2020) via kornia's U-Net, with the official `depth` weights.

kornia provides the architecture (its parameters, so the official state dict loads as is) and the
detection (strict 5×5 maxima of the heat map, above the threshold); this module pads the image (to
/16 and at least 32 px, maps cropped back before detection), loads the official checkpoint from our
resolver (the state lives under `"extractor"`), checks the input, and returns keypoints sorted by
score, which kornia does not do (it lists them in raster order). Keypoints are integer heat-map
pixels, i.e. pixel centres.

Speed without changing the result: the U-Net's last layer is a 5×5 convolution from 80 channels to
129 (128 descriptor channels + the heat map) at full resolution — about 80 % of the network's
FLOPs. Only the heat-map channel is needed everywhere; the descriptor channels are needed only at
the keypoints. So the last layer runs as a 1-channel convolution over the image, and the 128
descriptor channels as one matmul over the K gathered 5×5×80 patches (`sparse_last_layer`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.feature import DISK as KorniaDISK
from kornia.feature.disk.detector import heatmap_to_keypoints
from omegaconf import DictConfig

from ... import weights as weights_lib
from ...errors import ImageError
from ...images import gray_to_rgb
from ..base import Extractor, load_state_strict, stack_keypoint_sets


class DISK(Extractor):
    """Dense U-Net heat map + 128-d descriptors at every pixel; RGB input."""

    default_conf = {
        "weights": None,  # None → registered "disk-depth"; or a path to a checkpoint
        "max_num_keypoints": 2048,  # None or <= 0: every maximum above the threshold
        "detection_threshold": 0.0,  # on the heat-map logit, strictly above; None: none
        "nms_window_size": 5,
        "pad_if_not_divisible": True,  # zero-pad to a multiple of 16; no keypoint in the padding
    }
    grayscale = False
    descriptor_dim = 128

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        return [conf.weights or "disk-depth"]

    def _init(self, conf: DictConfig) -> None:
        self.net = KorniaDISK(desc_dim=self.descriptor_dim)
        source = self.weight_names(conf)[0]
        state = weights_lib.load_state_dict(source)
        if isinstance(state, dict) and "extractor" in state:
            state = state["extractor"]
        load_state_strict(self.net, state, source, "DISK")

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        image = gray_to_rgb(image)
        h, w = image.shape[-2:]
        # the U-Net halves the size 4 times and its instance norms need ≥ 2×2 at the bottom
        ph, pw = max(32, -(-h // 16) * 16), max(32, -(-w // 16) * 16)
        if not self.conf.pad_if_not_divisible and (ph, pw) != (h, w):
            raise ImageError(
                f"DISK needs H and W divisible by 16 and ≥ 32 (got {w}×{h}); "
                "set pad_if_not_divisible=True"
            )
        n, thr = self.conf.max_num_keypoints, self.conf.detection_threshold
        n = None if n is None or n <= 0 else int(n)
        # zero-pad bottom/right, crop the maps back before detection: no keypoint in the padding
        padded = F.pad(image, (0, pw - w, 0, ph - h)).contiguous(memory_format=torch.channels_last)
        x, last = last_layer_input(self.net.unet, padded)
        heat = dense_heat(x, last)[..., :h, :w]
        if data.get("keypoints") is not None:  # describe given points (GlueStick's end points)
            return self._describe(x, last, heat, data["keypoints"])
        detections = heatmap_to_keypoints(
            heat,
            n=n,
            window_size=self.conf.nms_window_size,
            score_threshold=float("-inf") if thr is None else thr,
        )
        per_image = []
        for i, d in enumerate(detections):
            order = torch.argsort(d.detection_logp, descending=True, stable=True)
            kpts = d.xys[order]
            desc = sparse_last_layer(x[i], last, kpts, self.descriptor_dim)
            per_image.append(
                (kpts.float(), d.detection_logp[order].float(), F.normalize(desc, dim=-1).float())
            )
        return stack_keypoint_sets(per_image)

    def _describe(self, x, last, heat, kpts) -> dict:
        """Given (B,N,2) points: the descriptor map bilinearly interpolated there from its four
        surrounding pixels (each computed sparsely; at an integer pixel exactly DISK's own
        descriptor), L2-normalised, and the heat map sampled likewise."""
        h, w = heat.shape[-2:]
        kp = kpts.float()
        xy = torch.stack([kp[..., 0].clamp(0, w - 1), kp[..., 1].clamp(0, h - 1)], -1)
        x0 = xy.floor().long()
        x0 = torch.minimum(x0, x0.new_tensor([max(w - 2, 0), max(h - 2, 0)]))
        a = (xy - x0).clamp(0, 1)  # (B,N,2) weights of the right / lower neighbour
        descs, scores = [], []
        for i in range(len(kp)):
            corners = [x0[i] + x0.new_tensor([dx, dy]) for dy in (0, 1) for dx in (0, 1)]
            corners = [c.clamp_max(c.new_tensor([w - 1, h - 1])) for c in corners]
            d = sparse_last_layer(x[i], last, torch.cat(corners), self.descriptor_dim)
            d = d.view(4, len(kp[i]), -1)
            ax, ay = a[i, :, :1], a[i, :, 1:]
            wts = [(1 - ax) * (1 - ay), ax * (1 - ay), (1 - ax) * ay, ax * ay]
            descs.append(sum(wk * dk for wk, dk in zip(wts, d)))
            hv = torch.stack([heat[i, 0, c[:, 1], c[:, 0]] for c in corners])[..., None]
            scores.append(sum(wk * hk for wk, hk in zip(wts, hv))[:, 0])
        return {
            "keypoints": kp,
            "keypoint_scores": torch.stack(scores).float(),
            "descriptors": F.normalize(torch.stack(descs).float(), dim=-1),
        }


def last_layer_input(unet, image: torch.Tensor) -> tuple[torch.Tensor, torch.nn.Conv2d]:
    """kornia's U-Net up to its last convolution: that convolution's (normalised, gated) input
    and the convolution itself, whose output the caller evaluates where it is needed."""
    features = [image]
    for layer in unet.path_down:
        features.append(layer(features[-1]))
    bottom, horizontal = features[-1], features[-2::-1]
    *inner, outer = unet.path_up
    for layer, skip in zip(inner, horizontal):
        bottom = layer(bottom, skip)
    norm, gate, _dropout, conv = outer.conv
    x = torch.cat([outer.upsample(bottom), horizontal[len(inner)]], dim=1)
    return gate(norm(x)), conv


def dense_heat(x: torch.Tensor, conv) -> torch.Tensor:
    """The last convolution's heat-map channel (its last output) at every pixel: (B, 1, H, W)."""
    return F.conv2d(x, conv.weight[-1:], conv.bias[-1:], padding=conv.padding)


def sparse_last_layer(x: torch.Tensor, conv, kpts: torch.Tensor, channels: int) -> torch.Tensor:
    """The first `channels` outputs of the same-padded odd-sized `conv` on x (C, H, W), at the
    integer pixels `kpts` (K, 2) only: one (K, C·k·k) × (C·k·k, channels) matmul."""
    k = conv.kernel_size[0]
    r = k // 2
    c, h, w = x.shape
    padded = F.pad(x, (r, r, r, r)).reshape(c, -1)  # zero padding, as padding="same" does
    offsets = torch.arange(k, device=x.device)
    rows = kpts[:, 1, None, None] + offsets[None, :, None]  # (K, k, 1) in padded rows
    cols = kpts[:, 0, None, None] + offsets[None, None, :]  # (K, 1, k)
    flat = (rows * (w + 2 * r) + cols).reshape(1, -1)  # (1, K·k·k)
    patches = padded.gather(1, flat.expand(c, -1)).reshape(c, len(kpts), k * k)
    patches = patches.transpose(0, 1).reshape(len(kpts), c * k * k)  # (K, C·k·k) as in weight
    weight = conv.weight[:channels].reshape(channels, -1)
    return torch.addmm(conv.bias[:channels], patches, weight.t())
