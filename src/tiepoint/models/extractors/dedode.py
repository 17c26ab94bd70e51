"""DeDoDe (Edstedt et al., "DeDoDe: Detect, Don't Describe — Describe, Don't Detect", 3DV 2024)
through kornia's port (`kornia.feature.DeDoDe`; kornia is a core dependency).

Why a wrapper: kornia's modules keep the official module names, so the official release files
(`dedode_detector_L.pth`, `dedode_descriptor_B.pth`) load into them strictly as they are; we only
resolve them through our weights table (kornia would fetch its own Hugging Face mirror).

Conventions we add on top of kornia: keypoints in pixels with centres at integers (kornia returns
corner-convention pixels, i + 0.5), descriptors L2-normalised (kornia returns them raw; DeDoDe's
own matchers normalise before comparing), grayscale images expanded to RGB. DeDoDe-G (DINOv2
descriptor) is not offered: it needs a separate DINOv2 checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ... import weights as weights_lib
from ...config import lookup
from ...errors import ConfigError
from ..base import Extractor, load_state_strict

# preset → (kornia model kind, registered official weight name)
DETECTORS = {"L-upright": ("L", "dedode_detector_L")}
DESCRIPTORS = {"B-upright": ("B", "dedode_descriptor_B")}


def _kornia_dedode():
    try:
        from kornia.feature import DeDoDe as KorniaDeDoDe
    except ImportError as e:
        raise ConfigError(
            f"the dedode extractor needs kornia.feature.DeDoDe ({e}): pip install -U 'kornia>=0.7'"
        ) from None
    return KorniaDeDoDe


class DeDoDe(Extractor):
    """DeDoDe keypoints (detector L) and 256-d descriptors (descriptor B) from an RGB image."""

    default_conf = {
        "detector": "L-upright",
        "descriptor": "B-upright",
        "detector_weights": None,  # None → the registered official file; or a checkpoint path
        "descriptor_weights": None,
        "max_num_keypoints": 2048,  # DeDoDe samples exactly this many (top of its scoremap)
    }
    grayscale = False
    descriptor_dim = 256

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        det = lookup(DETECTORS, conf.detector, "DeDoDe detector")[1]
        desc = lookup(DESCRIPTORS, conf.descriptor, "DeDoDe descriptor")[1]
        return [conf.detector_weights or det, conf.descriptor_weights or desc]

    def _init(self, conf: DictConfig) -> None:
        det_kind = lookup(DETECTORS, conf.detector, "DeDoDe detector")[0]
        desc_kind = lookup(DESCRIPTORS, conf.descriptor, "DeDoDe descriptor")[0]
        if conf.max_num_keypoints is None or int(conf.max_num_keypoints) <= 0:
            raise ConfigError("DeDoDe max_num_keypoints must be > 0 (it samples a fixed number)")
        # float32 autocast: kornia's default float16 would change results on CUDA only
        self.net = _kornia_dedode()(det_kind, desc_kind, amp_dtype=torch.float32)
        det_w, desc_w = self.weight_names(conf)
        self.load_weights(det_w, desc_w)

    def load_weights(self, detector: str, descriptor: str) -> None:
        """Load the official detector and descriptor state dicts (strict, key layout unchanged)."""
        for module, source, what in (
            (self.net.detector, detector, f"DeDoDe detector {self.conf.detector}"),
            (self.net.descriptor, descriptor, f"DeDoDe descriptor {self.conf.descriptor}"),
        ):
            load_state_strict(module, weights_lib.load_state_dict(source), source, what)

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        h, w = image.shape[-2:]
        image = image.to(next(self.net.parameters()).dtype)
        kpts, scores = self.net.detect(image, n=int(self.conf.max_num_keypoints))
        desc = self.net.describe(image, kpts)
        size = kpts.new_tensor([w, h])
        return {
            "keypoints": (kpts + 1) / 2 * size - 0.5,  # kornia's (2i + 1)/W − 1 → pixel i
            "keypoint_scores": scores,
            "descriptors": F.normalize(desc.float(), p=2, dim=-1),
        }
