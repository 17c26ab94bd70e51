"""SIFT (OpenCV) with optional RootSIFT; returns scales and orientations for SIFT-LightGlue."""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ..base import Extractor


def root_sift(desc: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Hellinger kernel: L1-normalise, square root (then unit L2 norm holds by construction)."""
    desc = desc / (np.abs(desc).sum(-1, keepdims=True) + eps)
    return np.sqrt(desc)


class SIFT(Extractor):
    default_conf = {
        "max_num_keypoints": 4096,
        "detection_threshold": 0.0066667,  # OpenCV's contrastThreshold is this × nOctaveLayers(3)
        "edge_threshold": 10,
        "rootsift": True,
        "nfeatures_factor": 1,
    }
    grayscale = True
    descriptor_dim = 128

    def _init(self, conf):
        self.dummy = torch.nn.Parameter(
            torch.zeros(0), requires_grad=False
        )  # gives the model a device

    def _detect(self, image: np.ndarray):
        n = self.conf.max_num_keypoints
        sift = cv2.SIFT_create(
            nfeatures=0 if not n or n < 0 else int(n),
            contrastThreshold=self.conf.detection_threshold * 3,
            edgeThreshold=self.conf.edge_threshold,
        )
        kps, desc = sift.detectAndCompute(image, None)
        if not kps:
            return (
                np.zeros((0, 2), np.float32),
                np.zeros(0, np.float32),
                np.zeros((0, 128), np.float32),
                np.zeros(0, np.float32),
                np.zeros(0, np.float32),
            )
        pts = np.array([k.pt for k in kps], np.float32)
        scores = np.array([k.response for k in kps], np.float32)
        scales = np.array([k.size for k in kps], np.float32)
        oris = np.deg2rad(np.array([k.angle for k in kps], np.float32))
        # OpenCV can return the same location twice with different orientations: keep both (as COLMAP does)
        order = np.argsort(-scores, kind="stable")
        if n and n > 0:
            order = order[:n]
        desc = desc.astype(np.float32)
        desc = (
            root_sift(desc)
            if self.conf.rootsift
            else desc / (np.linalg.norm(desc, axis=-1, keepdims=True) + 1e-8)
        )
        return pts[order], scores[order], desc[order], scales[order], oris[order]

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        outs = []
        for img in image:
            gray = img.mean(0) if img.shape[0] == 3 else img[0]
            u8 = (gray.clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            outs.append(self._detect(u8))
        n = min(len(o[0]) for o in outs)  # a batch stacks only with equal counts
        if len(outs) > 1:
            outs = [tuple(a[:n] for a in o) for o in outs]
        dev = image.device
        stack = lambda i: torch.from_numpy(np.stack([o[i] for o in outs])).to(dev)
        return {
            "keypoints": stack(0),
            "keypoint_scores": stack(1),
            "descriptors": stack(2),
            "scales": stack(3),
            "oris": stack(4),
        }
