"""LSD line segments (OpenCV's LineSegmentDetector), alone or next to a point extractor.

`LSD` returns `lines` (B,L,2,2) end points (x, y) in input pixels (centres at integers; LSD puts a
step edge between columns 49 and 50 at x ≈ 49.4) and `line_scores` (B,L), plus empty keypoints so
it is an extractor like any other. OpenCV ≥ 4.5.1 ships LSD again, so no extra package is needed.
As in Glue Factory's `lines/lsd.py`, segments shorter than `min_length` are dropped and the best
`max_num_lines` kept by score = −log10(NFA)·√length (with `refine: adv`, which computes the NFA as
the original LSD does; with `std`/`none` the score is the length). Zero-length segments are always
dropped; an image without line structure gives zero lines.

`PointsAndLines` (registered as `superpoint+lsd`, `aliked+lsd`, ... or `points_lines` with any
`points.name`) runs a point extractor and LSD on the same image and returns both key sets.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from ...errors import ConfigError
from ..base import Extractor

REFINE = {"none": 0, "std": 1, "adv": 2}
# point extractors whose `_forward` describes `data["keypoints"]` when given (no detection)
DESCRIBES_GIVEN_POINTS = {"superpoint", "aliked", "disk", "xfeat"}


def detect_lsd(
    gray: np.ndarray, min_length: float = 15.0, max_num_lines: int | None = 250, refine="adv"
) -> tuple[np.ndarray, np.ndarray]:
    """LSD on a uint8 gray image → (L,2,2) float32 segments and (L,) float32 scores, best first."""
    det = cv2.createLineSegmentDetector(REFINE[refine])
    segs, _, _, nfa = det.detect(np.ascontiguousarray(gray, np.uint8))
    if segs is None or len(segs) == 0:
        return np.zeros((0, 2, 2), np.float32), np.zeros(0, np.float32)
    segs = segs.reshape(-1, 2, 2).astype(np.float32)
    length = np.linalg.norm(segs[:, 1] - segs[:, 0], axis=-1)
    keep = (length >= max(float(min_length), 0.0)) & (length > 0) & np.isfinite(segs).all((1, 2))
    if nfa is not None:
        scores = nfa.reshape(-1) * np.sqrt(length)
    else:
        scores = length.astype(np.float64)
    segs, scores = segs[keep], scores[keep].astype(np.float32)
    order = np.argsort(-scores, kind="stable")
    if max_num_lines is not None and max_num_lines > 0:
        order = order[: int(max_num_lines)]
    return segs[order], scores[order]


def to_gray_u8(image: torch.Tensor) -> np.ndarray:
    """(1|3,H,W) float in [0,1] → (H,W) uint8, with Glue Factory's luma weights for colour."""
    if image.shape[0] == 3:
        w = image.new_tensor([0.299, 0.587, 0.114]).view(3, 1, 1)
        image = (image * w).sum(0, keepdim=True)
    return (image[0].clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


def stack_lines(per_image: list[tuple[np.ndarray, np.ndarray]], device) -> dict:
    """Batch per-image lines; shorter sets are padded with zero segments of score 0 and
    `valid_lines` False (a batch of one is never padded)."""
    n = max((len(s) for s, _ in per_image), default=0)
    lines = np.zeros((len(per_image), n, 2, 2), np.float32)
    scores = np.zeros((len(per_image), n), np.float32)
    valid = np.zeros((len(per_image), n), bool)
    for i, (s, c) in enumerate(per_image):
        lines[i, : len(s)], scores[i, : len(s)], valid[i, : len(s)] = s, c, True
    return {
        "lines": torch.from_numpy(lines).to(device),
        "line_scores": torch.from_numpy(scores).to(device),
        "valid_lines": torch.from_numpy(valid).to(device),
    }


class LSD(Extractor):
    default_conf = {
        "max_num_keypoints": 0,  # LSD finds no points
        "min_length": 15.0,  # px; Glue Factory's default
        "max_num_lines": 250,  # GlueStick's setting; None keeps all
        "refine": "adv",  # OpenCV refinement: adv (NFA scores, as the original LSD), std, none
    }
    grayscale = True
    descriptor_dim = 0

    def _init(self, conf):
        if conf.refine not in REFINE:
            raise ConfigError(f"LSD refine must be one of {sorted(REFINE)}, got '{conf.refine}'")
        self.dummy = torch.nn.Parameter(torch.zeros(0), requires_grad=False)  # gives a device

    def detect(self, image: torch.Tensor) -> dict:
        c = self.conf
        per = [detect_lsd(to_gray_u8(im), c.min_length, c.max_num_lines, c.refine) for im in image]
        return stack_lines(per, image.device)

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        b, dev = image.shape[0], image.device
        return {
            "keypoints": torch.zeros(b, 0, 2, device=dev),
            "keypoint_scores": torch.zeros(b, 0, device=dev),
            "descriptors": torch.zeros(b, 0, 0, device=dev),
            **self.detect(image),
        }


class PointsAndLines(Extractor):
    """A point extractor (`points`, any registered extractor config) plus LSD (`lines`).

    Top-level `max_num_keypoints` / `detection_threshold` go to the point extractor unless its
    own config sets them. The image is given to the point extractor in its colour mode.
    """

    default_conf = {
        "points": {},  # the point extractor's config; `name` required
        "lines": dict(LSD.default_conf),
        # GlueStick: also `line_descriptors` (B,L,2,D), the point extractor's descriptors of both
        # end points, described exactly as its keypoints (its given-keypoints path)
        "endpoint_descriptors": False,
    }
    points_name: str | None = None  # set by the registered `<points>+lsd` subclasses

    @classmethod
    def build_conf(cls, conf=None, overrides=None, where=""):
        """Top-level keys this class does not know belong to the point extractor, so a point
        pipeline's extractor config works unchanged after renaming it `<points>+lsd`."""
        from omegaconf import DictConfig, OmegaConf

        known = set(cls.full_default_conf())
        merged = {}
        for part in (conf, overrides):
            if part is not None:
                part = OmegaConf.to_container(part) if isinstance(part, DictConfig) else part
                merged = OmegaConf.to_container(OmegaConf.merge(merged, part))
        points = dict(merged.get("points") or {})
        for k in [k for k in merged if k not in known]:
            points.setdefault(k, merged.pop(k))
        merged["points"] = points
        return super().build_conf(merged, None, where)

    @classmethod
    def _points_conf(cls, conf) -> dict:
        from omegaconf import OmegaConf

        points = OmegaConf.to_container(conf.points)
        if cls.points_name:
            points.setdefault("name", cls.points_name)
        for k in ("max_num_keypoints", "detection_threshold"):
            if conf.get(k) is not None:
                points.setdefault(k, conf[k])
        return points

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        """The point extractor's weights (LSD has none)."""
        from .. import model_class

        points = cls._points_conf(cls.build_conf(conf))
        return (
            model_class("extractor", points["name"]).weight_names(points)
            if points.get("name")
            else []
        )

    def _init(self, conf):
        from omegaconf import OmegaConf

        from .. import get_model

        points = self._points_conf(conf)
        if not points.get("name"):
            raise ConfigError("points_lines extractor needs points.name (e.g. superpoint)")
        self.points = get_model("extractor", points)
        self.lsd = LSD({**OmegaConf.to_container(conf.lines), "name": "lsd"})
        self.grayscale = self.points.grayscale
        self.descriptor_dim = self.points.descriptor_dim
        if conf.endpoint_descriptors and points["name"] not in DESCRIBES_GIVEN_POINTS:
            raise ConfigError(
                f"endpoint_descriptors: {points['name']} cannot describe given points (no dense "
                f"descriptor map); use one of {sorted(DESCRIBES_GIVEN_POINTS)}"
            )

    def _forward(self, data: dict) -> dict:
        pred = dict(self.points(data))
        pred.update(self.lsd.detect(data["image"]))
        if self.conf.endpoint_descriptors:
            pred["line_descriptors"] = self.describe_endpoints(data, pred["lines"])
        return pred

    def describe_endpoints(self, data: dict, lines: torch.Tensor) -> torch.Tensor:
        """(B,L,2,2) segments → (B,L,2,D) L2-normalised descriptors of their end points, from the
        point extractor run on the given points (a second pass of its network: simple and exactly
        its keypoint sampling, at twice the point cost)."""
        b, n = lines.shape[:2]
        if n == 0:
            return lines.new_zeros(b, 0, 2, self.descriptor_dim)
        pts = lines.flatten(1, 2)
        desc = self.points({**data, "keypoints": pts})["descriptors"]
        return torch.nn.functional.normalize(desc.float(), dim=-1).unflatten(1, (n, 2))


def _points_lines(points: str) -> type:
    return type(f"{points.capitalize()}LSD", (PointsAndLines,), {"points_name": points})


SuperPointLSD = _points_lines("superpoint")
ALIKEDLSD = _points_lines("aliked")
DISKLSD = _points_lines("disk")
SIFTLSD = _points_lines("sift")
XFeatLSD = _points_lines("xfeat")
