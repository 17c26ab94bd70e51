"""DISK (Tyszkiewicz et al., NeurIPS 2020) via kornia's U-Net, with the official `depth` weights.

kornia provides the architecture and the detection (strict 5×5 maxima of the heat map, above the
threshold); this module pads the image (to /16 and at least 32 px, maps cropped back before
detection), loads the official checkpoint from our resolver (the state lives under
`"extractor"`), checks the input, and returns keypoints sorted by score, which kornia does not do
(it lists them in raster order). Keypoints are integer heat-map pixels, i.e. pixel centres.
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
        heat, desc = self.net.heatmap_and_dense_descriptors(F.pad(image, (0, pw - w, 0, ph - h)))
        heat, desc = heat[..., :h, :w], desc[..., :h, :w]
        detections = heatmap_to_keypoints(
            heat,
            n=n,
            window_size=self.conf.nms_window_size,
            score_threshold=float("-inf") if thr is None else thr,
        )
        feats = [d.merge_with_descriptors(desc[i]) for i, d in enumerate(detections)]
        per_image = []
        for f in feats:
            order = torch.argsort(f.detection_scores, descending=True, stable=True)
            per_image.append(
                (
                    f.keypoints[order].float(),
                    f.detection_scores[order].float(),
                    f.descriptors[order].float(),
                )
            )
        return stack_keypoint_sets(per_image)
