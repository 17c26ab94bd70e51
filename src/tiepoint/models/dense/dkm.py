"""DKMv3 (Edstedt et al., "DKM: Dense Kernelized Feature Matching", CVPR 2023), our own code that
reproduces `Parskatt/DKM` (`dkm/models/dkm.py`, `model_zoo/DKMv3.py`) and GIM's fork of it.

ResNet-50 pyramid → 1×1 projections at 32/16 → GP kernel regression + DFN decoder at 32 and 16
(absolute coordinates + certainty logit) → ConvRefiners at 16/8/4/2/1 (local correlation around the
warp target, radii 7/3/2) → certainty rule of DKM's `match`. With `upsample_res` an inference-time
second pass re-runs only the refiners 8/4/2/1 on the images resized to that size, starting from the
low-resolution warp (DKM's `upsample_preds`). The widths and the encoder are config keys (DKMv3's
by default) so that a reduced DKM trains on a CPU. See docs/dkm.md for the parity measurements
and the CPU demonstration.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from ... import weights as weights_lib
from ...config import lookup
from ...errors import ConfigError, ImageError
from ..backbones.resnet import ResNet18, ResNet50
from ..base import DenseMatcher, load_state_strict
from .decoder import DFN
from .gp import GP, grid_coords
from .refiner import ConvRefiner

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BLACK_LEVEL = 1 / 32  # GIM: a pixel with every RGB channel below this gets certainty 0

# official settings per checkpoint; `weights` is used only with `pretrained: true`
PRESETS = {
    "outdoor": {  # DKMv3_outdoor(): PIL bicubic resize, ImageNet normalisation
        "resize": [540, 720],
        "upsample_res": [864, 1152],
        "resize_mode": "bicubic",
        "normalize": True,
        "black_mask": False,
        "weights": "dkmv3_outdoor",
    },
    "indoor": {
        "resize": [480, 640],
        "upsample_res": None,
        "resize_mode": "bicubic",
        "normalize": True,
        "black_mask": False,
        "weights": "dkmv3_indoor",
    },
    "gim": {  # GIM's demo: DKMv3(h=672, w=896), its fork's F.interpolate on unnormalised tensors
        "resize": [672, 896],
        "upsample_res": [1152, 1536],
        "resize_mode": "bilinear",
        "normalize": False,
        "black_mask": True,
        "weights": "gim_dkm_100h",
    },
}

# per refiner scale: (displacement-embedding dim, local-correlation radius) of DKMv3's refiners
REFINERS = {"16": (128, 7), "8": (64, 3), "4": (32, 2), "2": (16, None), "1": (6, None)}
ENCODERS = {"resnet50": ResNet50, "resnet18": ResNet18}  # resnet18: light, for CPU-scale training
XFEAT_CHANNELS = {1: 3, 2: 8, 4: 24, 8: 64, 16: 64, 32: 64}


class XFeatPyramid(nn.Module):
    """The pretrained XFeat network (frozen) as a DKM encoder, for CPU-scale training: its
    matching descriptors (stride 8) and their 2×/4× average pools feed the refiner at 8 and the GP
    at 16 and 32, its early blocks the refiners at 2 and 4. XFeat sees the gray, instance-normalised
    image (H, W divisible by 32), as it was trained."""

    def __init__(self):
        super().__init__()
        from ..extractors.xfeat import XFeatNet

        self.net = XFeatNet()
        load_state_strict(self.net, weights_lib.load_state_dict("xfeat"), "xfeat", "XFeat")

    @staticmethod
    def channels() -> dict[int, int]:
        return dict(XFEAT_CHANNELS)

    def features(self, x: torch.Tensor, max_stride: int = 32, rgb=None) -> dict[int, torch.Tensor]:
        n = self.net
        g = F.instance_norm((x if rgb is None else rgb).mean(1, keepdim=True))
        feats = {1: x, 2: n.block1[:2](g)}
        x4 = n.block2(n.block1[2:](feats[2]) + n.skip1(g))
        feats[4] = x4
        if max_stride >= 8:
            x3 = n.block3(x4)
            x_16 = n.block4(x3)
            fused = x3 + _up(x_16, x3.shape[-2:]) + _up(n.block5(x_16), x3.shape[-2:])
            feats[8] = n.block_fusion(fused)
            for s in (16, 32):
                if s <= max_stride:
                    feats[s] = F.avg_pool2d(feats[8], s // 8)
        return feats


def refiner_dims(channels: dict[int, int], proj_dim: int) -> dict[str, tuple[int, int, int, int]]:
    """(in_dim, hidden_dim, emb_dim, radius) per scale: the refiner sees both images' features
    (projected to `proj_dim` at 16), the displacement embedding and the local correlation; hidden =
    in (×2 at full resolution), DKMv3's rule (e.g. 16: 2·512 + 128 + 15² for ResNet-50)."""
    out = {}
    for s, (emb, r) in REFINERS.items():
        c = proj_dim if s == "16" else channels[int(s)]
        in_dim = 2 * c + emb + ((2 * r + 1) ** 2 if r else 0)
        out[s] = (in_dim, in_dim * (2 if s == "1" else 1), emb, r)
    return out


class _Encoder(nn.Module):
    """Holds the ResNet (or the XFeat pyramid) as `net` so that state keys read `encoder.net.*` as
    in DKM."""

    def __init__(self, name: str = "resnet50"):
        super().__init__()
        if name == "xfeat":
            self.net = XFeatPyramid()
            for p in self.parameters():  # frozen: pretrained features, nothing to train
                p.requires_grad_(False)
        else:  # DKM's checkpoints carry an unused fc: the loader drops it
            self.net = lookup(ENCODERS, name, "DKM encoder (or xfeat)")(with_fc=False)


class _Decoder(nn.Module):
    """Holds DKM's decoder parts under their checkpoint names (`decoder.{embedding_decoder, gps,
    proj, conv_refiner}`); the multi-scale loop lives in `DKM._decode`. Widths from the config
    (DKMv3: proj 512, GP 256, DFN 384/256, 8 hidden refiner blocks)."""

    def __init__(self, conf, channels: dict[int, int]):
        super().__init__()
        p = conf.proj_dim
        self.embedding_decoder = DFN(
            ("32", "16"),
            internal_dim=conf.dfn_dim,
            feat_dim=conf.feat_dim,
            gp_dim=conf.gp_dim,
            in_dim=p,
        )
        self.gps = nn.ModuleDict(
            {s: GP(gp_dim=conf.gp_dim, T=0.2, sigma_noise=0.1) for s in ("32", "16")}
        )
        self.proj = nn.ModuleDict(
            {"16": nn.Conv2d(channels[16], p, 1, 1), "32": nn.Conv2d(channels[32], p, 1, 1)}
        )
        self.conv_refiner = nn.ModuleDict(
            {
                s: ConvRefiner(
                    i, h, 3, 5, conf.refiner_blocks, displacement_emb_dim=e, local_corr_radius=r
                )
                for s, (i, h, e, r) in refiner_dims(channels, p).items()
            }
        )


def _up(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


class DKM(DenseMatcher):
    """DKMv3 dense matcher; `preset` outdoor | indoor | gim picks the official settings.

    Output of `forward` (besides `warp`/`certainty`, see `DenseMatcher`):
    `scales`: {s: {"flow": (B',2,h_s,w_s), "logits": (B',1,h_s,w_s)}} for s in 32, 16, 8, 4, 2, 1 of
    the main pass (at `resize`), the raw per-scale predictions DKM's loss is computed on: `flow` are
    the absolute normalised target coordinates in the other image, `logits` the accumulated
    certainty logits (before DKM's `match` rule). B' = 2B when symmetric (rows 0..B-1: image 0 →
    image 1, rows B..2B-1: image 1 → image 0), else B. Flow and logits are detached between scales
    (DKM's `detach=True`). With the upsample pass (eval mode only) `scales_upsampled` holds the
    same for s in 8, 4, 2, 1 at `upsample_res`.
    """

    default_conf = {
        "name": "dkm",
        "preset": "outdoor",
        "pretrained": True,  # false: random initialisation (tests, training from scratch)
        "weights": None,  # None → the preset's registered weights; or a path
        "resize": [540, 720],  # internal (h, w) of the main pass
        "upsample_res": [864, 1152],  # (h, w) of the inference-time second pass; null: none
        "resize_mode": "bicubic",  # bicubic (antialiased, as DKM's PIL resize) | bilinear (GIM)
        "normalize": True,  # ImageNet mean/std (official DKM) or none (GIM)
        "black_mask": False,  # GIM: certainty 0 where every RGB channel < 1/32
        "symmetric": True,
        # architecture (DKMv3's by default; narrower/shallower for CPU-scale training)
        "encoder": "resnet50",  # resnet50 | resnet18 | xfeat (pretrained XFeat, frozen)
        "proj_dim": 512,  # 1×1 projection of the stride-16/32 features (GP and DFN input)
        "gp_dim": 256,  # GP coordinate embedding
        "dfn_dim": 384,  # DFN internal width
        "feat_dim": 256,  # DFN feature input width
        "refiner_blocks": 8,  # hidden blocks of every ConvRefiner
    }
    symmetric = True
    # a pipeline may add/drop the second pass, and match at another input size than trained
    # (e.g. a wide KITTI frame); else both stay as trained
    inference_overrides = ("upsample_res", "resize")

    @classmethod
    def preset_conf(cls, conf=None):
        defaults = cls.full_default_conf()
        preset = (conf or {}).get("preset") or defaults.preset
        settings = dict(lookup(PRESETS, preset, "DKM preset"))
        settings.pop("weights")  # `weights: null` stays "the preset's, when pretrained"
        return OmegaConf.merge(defaults, settings)

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        """The DKM weights `conf` loads (first), and XFeat's for the `xfeat` encoder."""
        conf = cls.build_conf(conf)
        if conf.weights is not None:
            names = [conf.weights]
        else:
            names = [PRESETS[conf.preset]["weights"]] if conf.pretrained else []
        return names + (["xfeat"] if conf.encoder == "xfeat" else [])

    def _init(self, conf):
        lookup(("bicubic", "bilinear"), conf.resize_mode, "DKM resize_mode")
        self.symmetric = bool(conf.symmetric)
        if conf.encoder == "xfeat":
            for key in ("resize", "upsample_res"):
                if conf[key] and any(int(v) % 32 for v in conf[key]):
                    raise ConfigError(
                        f"DKM with the xfeat encoder needs {key} divisible by 32, got {list(conf[key])}"
                    )
        self.encoder = _Encoder(conf.encoder)
        self.decoder = _Decoder(conf, type(self.encoder.net).channels())
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        names = self.weight_names(conf)
        if conf.encoder == "xfeat":
            names = names[:-1]  # XFeat's own: the encoder loads them
        if names:
            self.load_checkpoint(names[0])

    def train(self, mode: bool = True):
        """A frozen (XFeat) encoder keeps its batch norms on their running statistics."""
        super().train(mode)
        if self.conf.encoder == "xfeat":
            self.encoder.eval()
        return self

    # ---------------------------------------------------------------- weights
    @classmethod
    def checkpoint_state(cls, state) -> dict:
        """A DKM / GIM checkpoint or a tiepoint training checkpoint → our state dict: unwrap
        `state_dict`, or a trainer's `dense.` weights (the base rule); strip GIM's Lightning
        `model.` prefix, drop the ResNet classifier `encoder.net.fc.*` (unused by DKM).
        (`from_checkpoint` / `load_checkpoint` are DenseMatcher's, through this.)"""
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        state = super().checkpoint_state(state)
        if not isinstance(state, dict):
            return state
        out = {}
        for k, v in state.items():
            k = k[len("model.") :] if k.startswith("model.") else k
            if not k.startswith("encoder.net.fc."):
                out[k] = v
        return out

    # ---------------------------------------------------------------- network
    def _prepare(self, image: torch.Tensor, size) -> torch.Tensor:
        """[0,1] RGB at any size → the network's input at `size` (resize, then normalise)."""
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        image = image.float()
        if tuple(image.shape[-2:]) != tuple(size):
            if self.conf.resize_mode == "bicubic":
                # DKM resizes 8-bit PIL images (bicubic, antialiased, clipped to [0, 255])
                image = F.interpolate(
                    image, size=tuple(size), mode="bicubic", align_corners=False, antialias=True
                ).clamp(0, 1)
            else:
                image = _up(image, size)
        if self.conf.normalize:
            image = (image - self.mean) / self.std
        return image

    def _pyramids(self, image0, image1, size, max_stride=32):
        """Encode both images as one batch → (query pyramid, support pyramid) per DKM's
        `forward_symmetric` (support = halves swapped) or `forward`."""
        x = torch.cat((self._prepare(image0, size), self._prepare(image1, size)))
        if isinstance(self.encoder.net, XFeatPyramid):  # XFeat reads the unnormalised image
            rgb = x * self.std + self.mean if self.conf.normalize else x
            feats = self.encoder.net.features(x, max_stride, rgb=rgb)
        else:
            feats = self.encoder.net.features(x, max_stride)
        if self.symmetric:
            f_s = {s: torch.cat(f.chunk(2)[::-1]) for s, f in feats.items()}
            return feats, f_s
        return {s: f.chunk(2)[0] for s, f in feats.items()}, {
            s: f.chunk(2)[1] for s, f in feats.items()
        }

    def _decode(self, f0: dict, f1: dict, scales, flow=None, logits=None) -> dict:
        """DKM's `Decoder.forward`: coarse GP+DFN, then refiners, coarse to fine."""
        dec = self.decoder
        coarse = dec.embedding_decoder.scales()
        sizes = {s: f.shape[-2:] for s, f in f0.items()}
        h, w = sizes[1]
        b = f0[1].shape[0]
        first = scales[0]
        context = f0[first].new_zeros(b, dec.embedding_decoder.internal_dim, *sizes[first])
        if flow is None:
            flow = grid_coords(b, *sizes[first], f0[first].device, f0[first].dtype)
            logits = 0.0
        else:
            flow, logits = _up(flow, sizes[first]), _up(logits, sizes[first])
        out = {}
        for s in scales:
            key = str(s)
            a, c = f0[s], f1[s]
            if key in dec.proj:
                a, c = dec.proj[key](a), dec.proj[key](c)
            if s in coarse:
                context = _up(context, sizes[s])
                mu = dec.gps[key](a, c)
                flow, logits, context = dec.embedding_decoder(mu, a, context, key)
            if key in dec.conv_refiner:
                d_logit, disp = dec.conv_refiner[key](a, c, flow)
                flow = torch.stack(
                    (flow[:, 0] + s * disp[:, 0] / (4 * w), flow[:, 1] + s * disp[:, 1] / (4 * h)),
                    dim=1,
                )
                logits = logits + d_logit
            out[s] = {"flow": flow, "logits": logits}
            if s != 1:  # carried to the next scale upsampled and detached
                flow = _up(flow, sizes[s // 2]).detach()
                logits = _up(logits, sizes[s // 2]).detach()
        return out

    def _black_mask(self, image: torch.Tensor, size) -> torch.Tensor:
        """GIM: (B,1,*size) True where every channel of the input pixel is below 1/32."""
        black = (image < BLACK_LEVEL).all(dim=1, keepdim=True).float()
        return F.interpolate(black, size=tuple(size), mode="nearest").bool()

    def _forward(self, data: dict) -> dict:
        image0, image1 = data["image0"], data["image1"]
        if image0.shape[0] != image1.shape[0]:
            raise ImageError(
                f"DKM: image0 and image1 batch sizes differ ({image0.shape[0]} vs {image1.shape[0]})"
            )
        f0, f1 = self._pyramids(image0, image1, self.conf.resize)
        scales = self._decode(f0, f1, [32, 16, 8, 4, 2, 1])
        pred = {"scales": scales}
        final, (hs, ws) = scales[1], tuple(self.conf.resize)
        if self.conf.upsample_res and not self.training:
            hs, ws = tuple(self.conf.upsample_res)
            g0, g1 = self._pyramids(image0, image1, (hs, ws), max_stride=8)
            up = self._decode(g0, g1, [8, 4, 2, 1], final["flow"], final["logits"])
            pred["scales_upsampled"] = up
            final = up[1]
        # DKM's `match`: subtract half of the negative part of the scale-16 logit ("attenuation")
        low = _up(scales[16]["logits"], (hs, ws))
        cert = torch.sigmoid(final["logits"] - 0.5 * low * (low < 0))
        flow = final["flow"]
        cert = cert.masked_fill((flow.abs() > 1).any(dim=1, keepdim=True), 0.0)
        if self.conf.black_mask:
            masks = [self._black_mask(image0, (hs, ws))]
            if self.symmetric:
                masks.append(self._black_mask(image1, (hs, ws)))
            cert = cert.masked_fill(torch.cat(masks), 0.0)
        flow = flow.clamp(-1, 1).permute(0, 2, 3, 1)
        grid = grid_coords(flow.shape[0], hs, ws, flow.device, flow.dtype).permute(0, 2, 3, 1)
        if self.symmetric:
            fwd, bwd = flow.chunk(2)
            g = grid.chunk(2)[0]
            warp = torch.cat((torch.cat((g, fwd), -1), torch.cat((bwd, g), -1)), dim=2)
            cert = torch.cat(cert.chunk(2), dim=3)
        else:
            warp = torch.cat((grid, flow), dim=-1)
        pred["warp"], pred["certainty"] = warp, cert[:, 0]
        return pred
