"""LoFTR (Sun et al., CVPR 2021), detector-free semi-dense matching, and GIM's variant of it.

Our own code, reproducing `zju3dv/LoFTR` (as ported by kornia, `kornia.feature.LoFTR`) and GIM's
fork (`xuelunshen/gim`, `networks/loftr`): backbone → coarse maps at 1/8 and fine maps at 1/2 →
sine position encoding → 4 × (self, cross) linear-attention layers on the coarse tokens →
dual-softmax confidence (temperature 0.1), matches above 0.2 that are mutual maxima and at least 2
cells off the border → the 5×5 fine windows around each match (stride 4 on the 1/2 map) → one
(self, cross) layer → the expected position of window 0's centre in window 1's heatmap.
Vanilla LoFTR reads a gray image with a ResNet-18-like FPN; GIM's an RGB image with a ResNet-50
trunk (`preset: gim`). See docs/loftr.md.

How it fits `DenseMatcher`: LoFTR gives matches, not a warp. `forward` returns the semi-dense
matches (`keypoints0/1` in pixels of the input images, `confidence`, `batch_indexes`) and the
coarse `conf_matrix`, but no `warp`/`certainty`; `sample` returns one pair's matches in
normalised coordinates (all of them, or the `num_matches` most confident), so the public API,
evaluation and reconstruction treat them exactly like DKM's sampled matches (`MatchResult.dense`
stays None: there is no warp to keep).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from ...config import lookup
from ...errors import ConfigError, ImageError
from ..base import DenseMatcher
from .loftr_blocks import LocalFeatureTransformer, PositionEncodingSine, ResNet50FPN82, ResNetFPN82
from .loftr_matching import (
    FinePreprocess,
    coarse_matches,
    dual_softmax,
    fine_expectation,
    fine_heatmap,
    grid_points,
)
from .sampling import to_normalized_coordinates

COARSE_STRIDE, FINE_STRIDE = 8, 2  # LoFTR's `resolution` (8, 2)
GRAY = (0.299, 0.587, 0.114)

PRESETS = {
    # MegaDepth-trained; LoFTR's MegaDepth test resizes the long side to 840
    "outdoor": {"resize": 840, "weights": "loftr_outdoor"},
    # ScanNet-trained (640×480); the original indoor model, trained with the position-encoding bug
    "indoor": {"resize": 640, "weights": "loftr_indoor"},
    # ScanNet, retrained with the bug fixed (zju3dv/LoFTR#41)
    "indoor_new": {"resize": 640, "temp_bug_fix": True, "weights": "loftr_indoor_ds_new"},
    # GIM-LoFTR: RGB ResNet-50 trunk, no coarse feature in the fine windows
    "gim": {
        "resize": 1024,
        "backbone": "resnet50_fpn",
        "rgb": True,
        "fine_concat_coarse": False,
        "weights": "gim_loftr_50h",
    },
}
BACKBONES = ("resnet18_fpn", "resnet50_fpn")


class LoFTR(DenseMatcher):
    """LoFTR semi-dense matcher; `preset` outdoor | indoor | indoor_new | gim.

    Output of `forward`: `keypoints0`, `keypoints1` (M, 2) in pixels of `image0`/`image1` (centres
    at integers; LoFTR's own coordinates are kept, i.e. coarse cell k sits at pixel 8k of the
    network input), `confidence` (M,) the coarse dual-softmax score, `batch_indexes` (M,),
    `conf_matrix` (B, L, S) on the coarse grids `hw0_c`, `hw1_c`, `expec_f` (M, 3) the fine
    expectation (x, y in [-1, 1] of the window) and its spread, and `keypoints0_net` /
    `keypoints1_net` in pixels of the network input (what the reference returns).
    """

    default_conf = {
        "name": "loftr",
        "preset": "outdoor",
        "pretrained": True,  # false: random initialisation
        "weights": None,  # None → the preset's registered weights; or a path
        "resize": 840,  # long side of the network input (only shrinks); null: input size
        "backbone": "resnet18_fpn",  # resnet18_fpn (vanilla) | resnet50_fpn (GIM)
        "rgb": False,  # the network reads RGB (GIM) instead of gray
        "initial_dim": 128,
        "block_dims": [128, 196, 256],  # vanilla FPN widths at 1/2, 1/4, 1/8
        "d_coarse": 256,
        "d_fine": 128,
        "nhead": 8,
        "coarse_layers": 4,  # (self, cross) pairs
        "fine_layers": 1,
        "fine_window": 5,
        "fine_concat_coarse": True,
        "temp_bug_fix": False,  # position-encoding fix; the official outdoor/indoor weights: off
        "match_threshold": 0.2,
        "border_rm": 2,
        "temperature": 0.1,
        "num_matches": None,  # None: every match; else the most confident ones
    }
    inference_keys = (*DenseMatcher.inference_keys, "match_threshold")

    @classmethod
    def preset_conf(cls, conf=None):
        defaults = cls.full_default_conf()
        preset = (conf or {}).get("preset") or defaults.preset
        settings = dict(lookup(PRESETS, preset, "LoFTR preset"))
        settings.pop("weights")
        return OmegaConf.merge(defaults, settings)

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        if conf.weights is not None:
            return [conf.weights]
        return [PRESETS[conf.preset]["weights"]] if conf.pretrained else []

    def _init(self, conf):
        lookup(BACKBONES, conf.backbone, "LoFTR backbone")
        cin = 3 if conf.rgb else 1
        if conf.backbone == "resnet50_fpn":
            self.backbone = ResNet50FPN82(cin, fine=conf.d_fine, coarse=conf.d_coarse)
        else:
            dims = list(conf.block_dims)
            if dims[0] != conf.d_fine or dims[2] != conf.d_coarse:
                raise ConfigError(
                    f"LoFTR block_dims {dims}: the first must equal d_fine ({conf.d_fine}) and "
                    f"the last d_coarse ({conf.d_coarse})"
                )
            self.backbone = ResNetFPN82(conf.initial_dim, dims, cin)
        self.pos_encoding = PositionEncodingSine(conf.d_coarse, conf.temp_bug_fix)
        self.loftr_coarse = LocalFeatureTransformer(conf.d_coarse, conf.nhead, conf.coarse_layers)
        self.fine_preprocess = FinePreprocess(
            conf.d_coarse, conf.d_fine, conf.fine_window, conf.fine_concat_coarse
        )
        self.loftr_fine = LocalFeatureTransformer(conf.d_fine, conf.nhead, conf.fine_layers)
        names = self.weight_names(conf)
        if names:
            self.load_checkpoint(names[0])

    # ---------------------------------------------------------------- weights
    @classmethod
    def checkpoint_state(cls, state) -> dict:
        """An official LoFTR checkpoint (Lightning: `state_dict`, keys `matcher.*`), GIM's
        (`model.*`), a tiepoint training checkpoint or a plain state dict → our keys
        (`from_checkpoint` / `load_checkpoint` are DenseMatcher's, through this)."""
        state = super().checkpoint_state(state)
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
        if not isinstance(state, dict):
            return state
        out = {}
        for k, v in state.items():
            for prefix in ("matcher.", "model."):
                if k.startswith(prefix):
                    k = k[len(prefix) :]
                    break
            out[k] = v
        return out

    # ---------------------------------------------------------------- network
    def _net_size(self, h: int, w: int) -> tuple[int, int]:
        """The network's input size: shrunk to `resize` on the long side, floored to multiples
        of 8 (as GIM and LoFTR's loaders)."""
        s = min(1.0, self.conf.resize / max(h, w)) if self.conf.resize else 1.0
        return int(round(h * s)) // 8 * 8, int(round(w * s)) // 8 * 8

    def _prepare(self, image: torch.Tensor, size) -> torch.Tensor:
        image = image.float()
        if self.conf.rgb and image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        elif not self.conf.rgb and image.shape[1] == 3:
            image = sum(c * image[:, i : i + 1] for i, c in enumerate(GRAY))
        if tuple(image.shape[-2:]) != tuple(size):
            image = F.interpolate(
                image, size=tuple(size), mode="bilinear", align_corners=False, antialias=True
            )
        return image

    def _empty(self, image0, image1) -> dict:
        z = image0.new_zeros(0, 2)
        return {
            "keypoints0": z,
            "keypoints1": z,
            "keypoints0_net": z,
            "keypoints1_net": z,
            "confidence": image0.new_zeros(0),
            "batch_indexes": torch.zeros(0, dtype=torch.long, device=image0.device),
            "expec_f": image0.new_zeros(0, 3),
            "image_size0": (image0.shape[-1], image0.shape[-2]),
            "image_size1": (image1.shape[-1], image1.shape[-2]),
        }

    def _forward(self, data: dict) -> dict:
        image0, image1 = data["image0"], data["image1"]
        if image0.shape[0] != image1.shape[0]:
            raise ImageError(
                f"LoFTR: image0 and image1 batch sizes differ ({image0.shape[0]} vs {image1.shape[0]})"
            )
        s0, s1 = self._net_size(*image0.shape[-2:]), self._net_size(*image1.shape[-2:])
        # a grid within 2·border cells has no cell off the border: no match is possible
        min_side = COARSE_STRIDE * (2 * self.conf.border_rm + 1)
        if min(*s0, *s1) < max(min_side, COARSE_STRIDE):
            return self._empty(image0, image1)
        pred = self.match_network(self._prepare(image0, s0), self._prepare(image1, s1))
        pred["image_size0"] = (image0.shape[-1], image0.shape[-2])
        pred["image_size1"] = (image1.shape[-1], image1.shape[-2])
        for i, (net, img) in enumerate(((s0, image0), (s1, image1))):
            k = pred[f"keypoints{i}_net"]  # network pixels → input pixels (centres at integers)
            scale = k.new_tensor([img.shape[-1] / net[1], img.shape[-2] / net[0]])
            pred[f"keypoints{i}"] = (k + 0.5) * scale - 0.5
        return pred

    def match_network(self, x0: torch.Tensor, x1: torch.Tensor) -> dict:
        """The reference's forward on network inputs (sizes multiples of 8): matches in network
        pixels, as `kornia.feature.LoFTR` / GIM's `LoFTR` return them."""
        conf = self.conf
        b = x0.shape[0]
        if x0.shape[-2:] == x1.shape[-2:]:  # one backbone pass, as the reference
            fc, ff = self.backbone(torch.cat([x0, x1]))
            (fc0, fc1), (ff0, ff1) = fc.split(b), ff.split(b)
        else:
            (fc0, ff0), (fc1, ff1) = self.backbone(x0), self.backbone(x1)
        hw0, hw1 = tuple(fc0.shape[-2:]), tuple(fc1.shape[-2:])
        t0 = self.pos_encoding(fc0).flatten(2).transpose(1, 2)
        t1 = self.pos_encoding(fc1).flatten(2).transpose(1, 2)
        t0, t1 = self.loftr_coarse(t0, t1)
        conf_matrix = dual_softmax(t0, t1, conf.temperature)
        b_ids, i_ids, j_ids, mconf = coarse_matches(
            conf_matrix, hw0, hw1, conf.match_threshold, conf.border_rm
        )
        k0, k1, expec = self.refine(ff0, ff1, t0, t1, b_ids, i_ids, j_ids, hw0, hw1)
        return {
            "keypoints0_net": k0,
            "keypoints1_net": k1,
            "confidence": mconf,
            "batch_indexes": b_ids,
            "conf_matrix": conf_matrix,
            "hw0_c": hw0,
            "hw1_c": hw1,
            "expec_f": expec,
        }

    def refine(self, ff0, ff1, t0, t1, b_ids, i_ids, j_ids, hw0, hw1):
        """The fine stage for given coarse matches (cells i_ids of image 0 ↔ j_ids of image 1):
        fine maps (B, C_f, H/2, W/2), transformed coarse tokens (B, L|S, C). Returns keypoints0,
        keypoints1 in network pixels and `expec_f` (M, 3)."""
        k0 = grid_points(i_ids, hw0[1], COARSE_STRIDE)
        k1c = grid_points(j_ids, hw1[1], COARSE_STRIDE)
        stride = ff0.shape[2] // hw0[0]  # fine cells per coarse cell (4)
        w0, w1 = self.fine_preprocess(ff0, ff1, t0, t1, b_ids, i_ids, j_ids, hw0[1], hw1[1], stride)
        if len(b_ids):
            w0, w1 = self.loftr_fine(w0, w1)
            coords, std = fine_expectation(fine_heatmap(w0, w1))
        else:
            coords, std = k0.new_zeros(0, 2), k0.new_zeros(0)
        k1 = k1c + coords * (self.conf.fine_window // 2) * FINE_STRIDE
        return k0, k1, torch.cat([coords, std[:, None]], -1)

    def sample(self, pred: dict, num: int | None = None, generator=None):
        """One pair's matches (batch index 0) as (K, 4) normalised (x0, y0, x1, y1) and their
        confidences: all of them, or the `num` (else `num_matches`) most confident. Nothing is
        drawn at random (`generator` is accepted for the `DenseMatcher` contract)."""
        if len(pred["batch_indexes"]) and int(pred["batch_indexes"].max()) > 0:
            raise ConfigError(
                "LoFTR.sample takes one pair; this prediction holds a batch (select by "
                "batch_indexes)"
            )
        k0, k1, c = pred["keypoints0"], pred["keypoints1"], pred["confidence"]
        num = num if num is not None else self.conf.num_matches
        if num is not None and len(c) > int(num):
            keep = torch.sort(c, descending=True, stable=True).indices[: int(num)]
            k0, k1, c = k0[keep], k1[keep], c[keep]
        m = torch.cat(
            [
                to_normalized_coordinates(k0, pred["image_size0"]),
                to_normalized_coordinates(k1, pred["image_size1"]),
            ],
            -1,
        )
        return m, c
