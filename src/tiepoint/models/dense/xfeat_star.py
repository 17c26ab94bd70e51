"""XFeat* (Potje et al., CVPR 2024, "XFeat: Accelerated Features"): XFeat's semi-dense mode.

Our own code, reproducing `verlab/accelerated_features` (`XFeat.match_xfeat_star`) on our XFeat
network (`models/extractors/xfeat.XFeatNet`, the official `xfeat.pt`, which holds the refinement
MLP `fine_matcher`). Steps, per image and per scale s in (0.6, 1.3) (multiscale; shares 20 %/80 %
of `top_k`): resize by s, then to the multiple of 32 below → the network → the `top_k` cells of the
1/8 reliability map (no detection threshold, no NMS: "dense") with their raw (un-normalised, as
the official) 64-d descriptors, at pixel 8·cell of the network input. Both images' cells are
matched by mutual nearest neighbour on the descriptor dot product (`min_cossim` ≤ 0: no floor, as
`match_xfeat_star`); each pair's concatenated descriptors go through `fine_matcher` → 64 logits
of an 8×8 offset class; confidence = max softmax(3·logits), kept above `fine_conf` (0.25); the
offset is the soft-argmax (temperature 3) of the 8×8 map centred at (4, 4), added — times the
keypoint's scale — to image 0's keypoint only (image 1's stays on its cell), as the official.

Coordinates: the official maps network pixels back by x·W/W'/s; we keep its positions in network
pixels (centres at integers) and map them with the pixel-centre convention
x → (x + 0.5)·W/W' − 0.5 (W' the network width at that scale), as LoFTR here. See docs/xfeat_star.md.

How it fits `DenseMatcher`: like LoFTR, matches and no warp; `sample` (LoFTR's) returns the
`num_matches` most confident.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ... import weights as weights_lib
from ...errors import ConfigError, ImageError
from ..base import DenseMatcher, load_state_strict
from ..extractors.xfeat import XFeatNet
from .loftr import LoFTR

CELL = 8
SOFTMAX_TEMP = 3.0  # the official temperature of both the confidence and the soft-argmax


def dense_cells(net: XFeatNet, image: torch.Tensor, scale: float, top_k: int):
    """Top-k cells of one scale: image (B,1,H,W) gray in [0, 1] → keypoints (B,K,2) in input
    pixels (pixel-centre convention), descriptors (B,K,64) raw, input pixels per network pixel
    (W/W', H/H') (B,K,2); None when the scaled image is under 32 px."""
    h, w = image.shape[-2:]
    x = image
    if scale != 1.0:  # exactly the official call (scale_factor, not a size)
        x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
    hs, ws = x.shape[-2:]
    hn, wn = hs // 32 * 32, ws // 32 * 32
    if hn < 32 or wn < 32:
        return None
    x = F.interpolate(x, (hn, wn), mode="bilinear", align_corners=False)
    feats, _, reliability = net(F.instance_norm(x))
    b, c = feats.shape[:2]
    rel = reliability.flatten(1)  # (B, h*w)
    k = min(rel.shape[1], int(top_k))
    idx = torch.topk(rel, k, dim=-1).indices
    desc = torch.gather(feats.flatten(2).transpose(1, 2), 1, idx[..., None].expand(-1, -1, c))
    fw = feats.shape[-1]
    xy_net = torch.stack([idx % fw, idx // fw], -1).to(image.dtype) * CELL
    sx, sy = w / wn, h / hn
    kpts = (xy_net + 0.5) * xy_net.new_tensor([sx, sy]) - 0.5
    return kpts, desc, xy_net.new_tensor([sx, sy]).expand(b, k, 2)


def mutual_nn(d0: torch.Tensor, d1: torch.Tensor, min_cossim: float):
    """Mutual nearest neighbours of (N,C) and (M,C) by dot product; `min_cossim` > 0 also asks
    the dot product above it (the official `batch_match`)."""
    if len(d0) == 0 or len(d1) == 0:
        z = torch.zeros(0, dtype=torch.long, device=d0.device)
        return z, z
    sim = d0 @ d1.t()
    m01 = sim.argmax(1)
    m10 = sim.argmax(0)
    i0 = torch.arange(len(d0), device=d0.device)
    keep = m10[m01] == i0
    if min_cossim > 0:
        keep &= sim.max(1).values > min_cossim
    return i0[keep], m01[keep]


def is_flat(image: torch.Tensor) -> torch.Tensor:
    """(B,) True where an image is constant: instance norm makes it all zeros, every cell's
    descriptor is the same, and mutual NN would pair arbitrary cells (the official returns such
    matches; we return none)."""
    g = image.float().mean(1).flatten(1)
    return (g.amax(1) - g.amin(1)) < 1e-6


def soft_offsets(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N,64) offset logits (row-major 8×8) → offsets (N,2) in cells of the soft-argmax at
    temperature 3 around (4, 4), and confidence (N,) = max softmax(3·logits)."""
    p = torch.softmax(SOFTMAX_TEMP * logits, -1)
    r = torch.arange(CELL, device=logits.device, dtype=logits.dtype) - CELL // 2
    grid = torch.stack(torch.meshgrid(r, r, indexing="xy"), -1).reshape(-1, 2)  # (x, y)
    return p @ grid, p.max(-1).values


class XFeatStar(DenseMatcher):
    """XFeat* semi-dense matcher. `forward` returns `keypoints0`, `keypoints1` (M,2) in input
    pixels, `confidence` (M,) the refinement confidence, `batch_indexes` (M,), `image_size0/1`."""

    default_conf = {
        "name": "xfeat_star",
        "pretrained": True,
        "weights": None,  # None → registered "xfeat"; or a path to xfeat.pt
        "trainable": False,
        "top_k": 10000,  # cells per image, over both scales
        "multiscale": True,
        "scales": [0.6, 1.3],
        "scale_shares": [0.2, 0.8],  # of top_k
        "min_cossim": -1.0,  # ≤ 0: mutual NN only (match_xfeat_star)
        "fine_conf": 0.25,
        "num_matches": None,  # None: every match; else the most confident ones
    }
    inference_keys = (*DenseMatcher.inference_keys, "top_k", "fine_conf", "min_cossim")

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        if conf.weights is not None:
            return [conf.weights]
        return ["xfeat"] if conf.pretrained else []

    @classmethod
    def checkpoint_state(cls, state) -> dict:
        """The official `xfeat.pt` (the network's keys) → ours, under `net.`."""
        state = super().checkpoint_state(state)
        if isinstance(state, dict) and state and not any(k.startswith("net.") for k in state):
            return {f"net.{k}": v for k, v in state.items()}
        return state

    def _init(self, conf):
        if len(conf.scales) != len(conf.scale_shares):
            raise ConfigError("xfeat_star: scales and scale_shares must have the same length")
        self.net = XFeatNet()
        names = self.weight_names(conf)
        if names:
            state = self.checkpoint_state(weights_lib.load_state_dict(names[0]))
            load_state_strict(self, state, names[0], "XFeatStar")
        self.net.eval()

    def train(self, mode: bool = True):
        """Batch norms stay on their running statistics (XFeat* is inference-only here)."""
        super().train(mode)
        self.net.eval()
        return self

    def extract(self, image: torch.Tensor):
        """(B,C,H,W) → keypoints (B,K,2) input pixels, raw descriptors (B,K,64), scales (B,K,2)
        (input pixels per network pixel)."""
        gray = image.float().mean(1, keepdim=True)  # the official RGB → gray
        if self.conf.multiscale:
            plan = list(zip(self.conf.scales, self.conf.scale_shares, strict=True))
        else:
            plan = [(1.0, 1.0)]
        parts = []
        for s, share in plan:
            k = int(self.conf.top_k * share) if self.conf.multiscale else int(self.conf.top_k)
            out = dense_cells(self.net, gray, float(s), max(k, 1))
            if out is not None:
                parts.append(out)
        if not parts:
            b = image.shape[0]
            z = image.new_zeros(b, 0, 2)
            return z, image.new_zeros(b, 0, 64), z
        return tuple(torch.cat(t, 1) for t in zip(*parts, strict=True))

    def _forward(self, data: dict) -> dict:
        image0, image1 = data["image0"], data["image1"]
        if image0.shape[0] != image1.shape[0]:
            raise ImageError(
                "XFeatStar: image0 and image1 batch sizes differ "
                f"({image0.shape[0]} vs {image1.shape[0]})"
            )
        k0, d0, s0 = self.extract(image0)
        k1, d1, _ = self.extract(image1)
        flat = is_flat(image0) | is_flat(image1)
        out0, out1, conf, bidx = [], [], [], []
        for b in range(image0.shape[0]):
            n = 0 if flat[b] else None  # a flat image has no cell to match
            i0, i1 = mutual_nn(d0[b, :n], d1[b, :n], float(self.conf.min_cossim))
            if len(i0):
                logits = self.net.fine_matcher(torch.cat([d0[b, i0], d1[b, i1]], -1))
                off, c = soft_offsets(logits)
            else:
                off, c = k0.new_zeros(0, 2), k0.new_zeros(0)
            p0 = k0[b, i0] + off * s0[b, i0]
            good = c > self.conf.fine_conf
            out0.append(p0[good])
            out1.append(k1[b, i1][good])
            conf.append(c[good])
            bidx.append(torch.full((int(good.sum()),), b, dtype=torch.long, device=k0.device))
        return {
            "keypoints0": torch.cat(out0),
            "keypoints1": torch.cat(out1),
            "confidence": torch.cat(conf),
            "batch_indexes": torch.cat(bidx),
            "image_size0": (image0.shape[-1], image0.shape[-2]),
            "image_size1": (image1.shape[-1], image1.shape[-2]),
        }

    sample = LoFTR.sample
