"""A tiny but real dense matcher for training tests: a mini-DKM (global soft-argmax matching at
stride 8, then warp refiners at strides 4, 2, 1), trainable on CPU in seconds.

Plugged in as `dense_toy:ToyDense` (tests/ is on sys.path through tests/conftest.py). `layout`
picks the per-scale output format: "contract" ({warp (B,h,w,2), certainty (B,h,w)}) or "dkm"
(DKM's {flow (B',2,h,w), logits (B',1,h,w)}); with `symmetric` both directions are computed and
stacked as 2B rows, rows 0..B−1 being image 0 → image 1 (as DKM does).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tiepoint.geometry.dense_gt import normalized_grid
from tiepoint.models.base import DenseMatcher


def _block(cin, cout, stride):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout), nn.ReLU())


class ToyDense(DenseMatcher):
    default_conf = {"dim": 16, "layout": "contract", "symmetric": True, "pretrained": False}
    symmetric = True

    def _init(self, conf):
        self.symmetric = bool(conf.symmetric)
        d = conf.dim
        self.enc = nn.ModuleDict({"2": _block(3, d, 2), "4": _block(d, d, 2), "8": _block(d, d, 2)})
        self.temperature = nn.Parameter(torch.tensor(10.0))
        self.coarse_cert = nn.Conv2d(d + 1, 1, 3, 1, 1)
        self.refiners = nn.ModuleDict(
            {
                str(s): nn.Sequential(
                    nn.Conv2d(2 * c + 2, 2 * d, 3, 1, 1), nn.ReLU(), nn.Conv2d(2 * d, 3, 3, 1, 1)
                )
                for s, c in ((4, d), (2, d), (1, 3))
            }
        )

    def _pyramid(self, image):
        f = {1: image}
        x = image
        for s in (2, 4, 8):
            x = self.enc[str(s)](x)
            f[s] = x
        return f

    def _one_direction(self, f0, f1, full_w):
        b, _, h, w = f0[8].shape
        a = F.normalize(f0[8].flatten(2), dim=1)  # (B,d,hw)
        c = F.normalize(f1[8].flatten(2), dim=1)
        corr = torch.einsum("bdi,bdj->bij", a, c) * self.temperature
        p = corr.softmax(-1)
        grid = normalized_grid(b, h, w, a.device, a.dtype).reshape(b, h * w, 2)
        warp = (p @ grid).reshape(b, h, w, 2).permute(0, 3, 1, 2)
        top = corr.max(-1).values.reshape(b, 1, h, w)
        logit = self.coarse_cert(torch.cat([f0[8], top], 1))
        out = {8: (warp, logit)}
        for s in (4, 2, 1):
            hs, ws = f0[s].shape[-2:]
            warp = F.interpolate(warp.detach(), (hs, ws), mode="bilinear", align_corners=False)
            logit = F.interpolate(logit.detach(), (hs, ws), mode="bilinear", align_corners=False)
            sampled = F.grid_sample(
                f1[s], warp.permute(0, 2, 3, 1), mode="bilinear", align_corners=False
            )
            delta = self.refiners[str(s)](torch.cat([f0[s], sampled, warp], 1))
            warp = warp + delta[:, :2] * (2 * s / full_w)
            logit = logit + delta[:, 2:]
            out[s] = (warp, logit)
        return out

    def _forward(self, data):
        image0, image1 = data["image0"], data["image1"]
        if image0.shape[1] == 1:
            image0, image1 = image0.expand(-1, 3, -1, -1), image1.expand(-1, 3, -1, -1)
        f0, f1 = self._pyramid(image0), self._pyramid(image1)
        w = image0.shape[-1]
        out = self._one_direction(f0, f1, w)
        if self.symmetric:
            back = self._one_direction(f1, f0, w)
            out = {s: tuple(torch.cat([x, y]) for x, y in zip(out[s], back[s])) for s in out}
        if self.conf.layout == "dkm":
            scales = {s: {"flow": fl, "logits": lg} for s, (fl, lg) in out.items()}
        else:
            scales = {
                s: {"warp": fl.permute(0, 2, 3, 1), "certainty": lg[:, 0]}
                for s, (fl, lg) in out.items()
            }
        b = image0.shape[0]
        flow, logit = out[1][0][:b], out[1][1][:b]
        grid = normalized_grid(b, *flow.shape[-2:], flow.device, flow.dtype)
        warp = torch.cat([grid, flow.permute(0, 2, 3, 1)], -1)
        return {"scales": scales, "warp": warp, "certainty": torch.sigmoid(logit[:, 0])}
