"""The model that training optimises: a frozen extractor, ground truth, and a trainable matcher.

`TwoViewPipeline` takes a batch of pairs (`view0/view1` images, or cached features) and returns
features, ground-truth labels (`gt_*`) and the matcher's predictions in one flat dict. Keypoint
sets are brought to exactly `num_keypoints` per image (the best-scored ones, topped up with random
*padding* points: random location inside the image, random unit descriptor, score 0, `mask` False)
so batches stack; padding points are labelled unmatched (−1). A batch of GIM video labels
(`pseudo_labels`, `num_labels`) gets the zero-shot keypoints instead (`extract_with_labels`) and
`zs_num_labels`, which the matcher's loss reads (LightGlue: GIM's diagonal loss).
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from ..errors import ConfigError
from ..geometry.gt import gt_matches_from_homography, gt_matches_from_pose_depth
from ..images import gray_to_rgb, rgb_to_gray
from . import get_model
from .base import BaseModel

FEATURE_KEYS = ("keypoints", "keypoint_scores", "descriptors", "scales", "oris")


def pad_features(feats: dict, n: int, image_size: torch.Tensor) -> dict:
    """Keep the `n` best keypoints of one image, or top up with padding points; adds `mask` (n,)."""
    k = feats["keypoints"].shape[0]
    dev = feats["keypoints"].device
    if k >= n:
        keep = feats["keypoint_scores"].topk(n).indices.sort().values
        out = {key: v[keep] for key, v in feats.items()}
        out["mask"] = torch.ones(n, dtype=torch.bool, device=dev)
        return out
    extra = n - k
    w, h = float(image_size[0]), float(image_size[1])
    pad_kp = torch.rand(extra, 2, device=dev) * torch.tensor([w - 1, h - 1], device=dev)
    d = feats["descriptors"].shape[-1]
    pad = {
        "keypoints": pad_kp,
        "keypoint_scores": torch.zeros(extra, device=dev),
        "descriptors": F.normalize(torch.randn(extra, d, device=dev), dim=-1),
        "scales": torch.ones(extra, device=dev),
        "oris": torch.zeros(extra, device=dev),
    }
    out = {key: torch.cat([v, pad[key].to(v.dtype)], 0) for key, v in feats.items()}
    out["mask"] = torch.cat(
        [
            torch.ones(k, dtype=torch.bool, device=dev),
            torch.zeros(extra, dtype=torch.bool, device=dev),
        ]
    )
    return out


LINES_DEFAULT = 250  # lines per image when `num_lines` is unset (LSD's default budget)


def pad_lines(pred: dict, n: int) -> dict:
    """The `n` best lines of one image (batch index 0 of `pred`), zero-padded; `valid_lines`."""
    lines, scores = pred["lines"][0].float(), pred["line_scores"][0].float()
    valid = pred.get("valid_lines", torch.ones_like(scores, dtype=torch.bool)[None])[0]
    lines, scores = lines[valid], scores[valid]
    keep = scores.argsort(descending=True)[:n]
    lines, scores = lines[keep], scores[keep]
    pad = n - len(lines)
    out = {
        "lines": F.pad(lines, (0, 0, 0, 0, 0, pad)),
        "line_scores": F.pad(scores, (0, pad)),
        "valid_lines": torch.arange(n, device=lines.device) < len(lines),
    }
    if "line_descriptors" in pred:  # endpoint descriptors (GlueStick), (L,2,D)
        ld = pred["line_descriptors"][0].float()[valid][keep]
        out["line_descriptors"] = F.pad(ld, (0, 0, 0, 0, 0, pad))
    return out


class TwoViewPipeline(BaseModel):
    trained: ClassVar[str] = "matcher"  # the submodule training optimises and checkpoints
    default_conf = {
        "extractor": None,  # extractor config ({name: aliked, ...}); frozen
        "matcher": None,  # matcher config ({name: lightglue, ...}); trained
        "num_keypoints": None,  # per image; default: extractor.max_num_keypoints
        "num_lines": None,  # line extractors: lines per image (padded); default 250
        "ground_truth": {
            "th_positive": 3.0,  # px: reprojection closer than this (mutual nearest) = match
            "th_negative": 3.0,  # px: farther than this from every keypoint = unmatched
            "th_epipolar": None,  # px: epipolar check for keypoints without depth (posed data)
            "rel_depth_tol": 0.1,  # relative depth agreement for the occlusion check
        },
    }

    def _init(self, conf: DictConfig) -> None:
        if not conf.matcher or not conf.matcher.get("name"):
            raise ConfigError("model.matcher.name is missing")
        self.extractor = get_model("extractor", conf.extractor).eval() if conf.extractor else None
        if self.extractor is not None:
            for p in self.extractor.parameters():
                p.requires_grad_(False)
        self.matcher = get_model("matcher", conf.matcher)
        n = conf.num_keypoints or (conf.extractor or {}).get("max_num_keypoints")
        if not n or n <= 0:
            raise ConfigError(
                "model.num_keypoints (or extractor.max_num_keypoints) must be a positive number"
            )
        self.num_keypoints = int(n)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.extractor is not None:
            self.extractor.eval()  # frozen: BatchNorm statistics and dropout stay as trained
        return self

    @torch.no_grad()
    def extract(self, view: dict) -> dict:
        """Run the frozen extractor on each image of a batch and pad to `num_keypoints`."""
        if self.extractor is None:
            raise ConfigError("no cached features in the batch and model.extractor is not set")
        images = view["image"]
        sizes = view.get("image_size")
        out = []
        for b in range(images.shape[0]):
            img = images[b : b + 1]
            img = rgb_to_gray(img) if self.extractor.grayscale else gray_to_rgb(img)
            size = sizes[b] if sizes is not None else torch.tensor([img.shape[-1], img.shape[-2]])
            w, h = int(size[0]), int(size[1])
            pred = self.extractor(
                {"image": img[..., :h, :w]}
            )  # square padding is not image content
            feats = {k: pred[k][0].float() for k in FEATURE_KEYS if k in pred}
            feats = pad_features(feats, self.num_keypoints, size)
            if hasattr(self.matcher, "frozen_features"):  # e.g. reasoning: DINOv2 at keypoints
                rgb = gray_to_rgb(images[b : b + 1])[..., :h, :w]
                extra = self.matcher.frozen_features(rgb, feats["keypoints"][None])
                feats.update({k: v[0].float() for k, v in extra.items()})
            if "lines" in pred:  # line extractors: a fixed count per image, `valid_lines` mask
                feats.update(pad_lines(pred, self.conf.num_lines or LINES_DEFAULT))
            out.append(feats)
        return {k: torch.stack([o[k] for o in out]) for k in out[0]}

    @torch.no_grad()
    def extract_with_labels(self, view: dict, points: torch.Tensor, num: torch.Tensor) -> dict:
        """GIM's zero-shot keypoints: the first K of `num_keypoints` are the label points
        `points` (B,P,2), the rest random points; all described by the frozen extractor."""
        images, sizes = view["image"], view.get("image_size")
        n, out = self.num_keypoints, []
        for b in range(images.shape[0]):
            img = images[b : b + 1]
            img = rgb_to_gray(img) if self.extractor.grayscale else gray_to_rgb(img)
            size = sizes[b] if sizes is not None else torch.tensor([img.shape[-1], img.shape[-2]])
            w, h = int(size[0]), int(size[1])
            k = min(int(num[b]), n)
            rnd = torch.rand(n - k, 2, device=img.device) * img.new_tensor([w - 1, h - 1])
            kpts = torch.cat([points[b, :k].to(img.dtype), rnd], 0)
            pred = self.extractor({"image": img[..., :h, :w], "keypoints": kpts[None]})
            feats = {key: pred[key][0].float() for key in FEATURE_KEYS if key in pred}
            feats["mask"] = torch.ones(n, dtype=torch.bool, device=img.device)
            out.append(feats)
        return {k: torch.stack([o[k] for o in out]) for k in out[0]}

    @torch.no_grad()
    def ground_truth(self, data: dict, f0: dict, f1: dict) -> dict:
        g = self.conf.ground_truth
        kp0, kp1 = f0["keypoints"], f1["keypoints"]
        m0, m1 = f0.get("mask"), f1.get("mask")
        if "H_0to1" in data:
            gt = gt_matches_from_homography(
                kp0, kp1, data["H_0to1"], g.th_positive, g.th_negative, m0, m1
            )
        elif "T_0to1" in data:
            v0, v1 = data.get("view0", {}), data.get("view1", {})
            K0 = data["K0"] if "K0" in data else v0["K"]
            K1 = data["K1"] if "K1" in data else v1["K"]
            dk0, dk1 = data.get("depth_keypoints0"), data.get("depth_keypoints1")
            d0, d1 = v0.get("depth"), v1.get("depth")
            if dk0 is None and d0 is None:  # no depth at all: every keypoint is undecided
                dk0, dk1 = torch.zeros_like(kp0[..., 0]), torch.zeros_like(kp1[..., 0])
            gt = gt_matches_from_pose_depth(
                kp0,
                kp1,
                data["T_0to1"],
                K0,
                K1,
                d0,
                d1,
                dk0,
                dk1,
                g.th_positive,
                g.th_negative,
                g.th_epipolar,
                g.rel_depth_tol,
                m0,
                m1,
            )
        else:
            raise ConfigError("batch has neither H_0to1 nor T_0to1: cannot compute ground truth")
        if "lines" in f0 and "lines" in f1:
            gt.update(self.line_ground_truth(data, f0, f1))
        return {f"gt_{k}": v for k, v in gt.items()}

    def line_ground_truth(self, data: dict, f0: dict, f1: dict) -> dict:
        """`line_matches0/1`, `line_assignment` (docs/lines.md); without depth maps: all −2."""
        from ..geometry.lines import (
            gt_line_matches_from_homography,
            gt_line_matches_from_pose_depth,
        )

        l0, l1, v0, v1 = f0["lines"], f1["lines"], f0.get("valid_lines"), f1.get("valid_lines")
        if "H_0to1" in data:
            outs = [
                gt_line_matches_from_homography(
                    l0[b : b + 1],
                    l1[b : b + 1],
                    data["H_0to1"][b],
                    self._size(data, "0", f0, b),
                    self._size(data, "1", f1, b),
                    None if v0 is None else v0[b : b + 1],
                    None if v1 is None else v1[b : b + 1],
                )  # fmt: skip
                for b in range(l0.shape[0])
            ]
            out = {k: torch.cat([o[k] for o in outs]) for k in outs[0]}
        else:
            v0d, v1d = data.get("view0", {}), data.get("view1", {})
            if v0d.get("depth") is None or v1d.get("depth") is None:
                b, n0, n1 = l0.shape[0], l0.shape[1], l1.shape[1]
                full = lambda n: torch.full((b, n), -2, dtype=torch.long, device=l0.device)
                return {
                    "line_matches0": full(n0),
                    "line_matches1": full(n1),
                    "line_assignment": torch.zeros(b, n0, n1, dtype=torch.bool, device=l0.device),
                }
            K0 = data["K0"] if "K0" in data else v0d["K"]
            K1 = data["K1"] if "K1" in data else v1d["K"]
            out = gt_line_matches_from_pose_depth(
                l0, l1, data["T_0to1"], K0, K1, v0d["depth"], v1d["depth"], v0, v1
            )
        return {k: v.to(l0.device) for k, v in out.items()}

    def _size(self, data: dict, i: str, f: dict, b: int) -> tuple[float, float]:
        s = self._image_size(data, i, f)[b]
        return float(s[0]), float(s[1])

    def _features(self, data: dict, i: str) -> dict:
        if f"keypoints{i}" in data:  # cached features
            keys = (
                *FEATURE_KEYS,
                "mask",
                "lines",
                "line_scores",
                "valid_lines",
                "semantic",
                "line_descriptors",
            )
            f = {k: data[f"{k}{i}"] for k in keys if f"{k}{i}" in data}
            return f
        return self.extract(data[f"view{i}"])

    def _image_size(self, data: dict, i: str, f: dict):
        if f"image_size{i}" in data:
            return data[f"image_size{i}"]
        view = data.get(f"view{i}", {})
        if "image_size" in view:
            return view["image_size"]
        img = view["image"]
        return (
            torch.tensor([img.shape[-1], img.shape[-2]], device=img.device)
            .float()
            .expand(img.shape[0], 2)
        )

    def _forward(self, data: dict) -> dict:
        zero_shot = "pseudo_labels" in data  # GIM video labels (datasets/video_labels)
        if zero_shot:
            num = torch.as_tensor(data["num_labels"]).reshape(-1)
            lab = data["pseudo_labels"][:, : max(int(num.max()), 1)]
            f0 = self.extract_with_labels(data["view0"], lab[..., :2], num)
            f1 = self.extract_with_labels(data["view1"], lab[..., 2:], num)
        else:
            f0, f1 = self._features(data, "0"), self._features(data, "1")
        out = {f"{k}0": v for k, v in f0.items()} | {f"{k}1": v for k, v in f1.items()}
        out["image_size0"] = self._image_size(data, "0", f0)
        out["image_size1"] = self._image_size(data, "1", f1)
        if zero_shot:  # keypoint i of image 0 ↔ keypoint i of image 1 for i < zs_num_labels
            out["zs_num_labels"] = num.clamp(max=self.num_keypoints).to(lab.device)
        elif "gt_matches0" not in data:
            out.update(self.ground_truth(data, f0, f1))
        matcher_in = {k: v for k, v in out.items() if not k.startswith("gt_")}
        if getattr(self.matcher, "uses_ground_truth", False):  # DiffGlue noises the GT assignment
            matcher_in.update({k: v for k, v in {**data, **out}.items() if k.startswith("gt_")})
        out.update(self.matcher(matcher_in))
        return out

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        return self.matcher.loss(pred, {**data, **pred})
