"""Descriptor Reasoning (ACCV'24) as a matcher over any extractor: `xfeat+reasoning`, ...

The method refines each image's local descriptors on its own (DINOv2 semantics sampled at the
keypoints, two small transformer stacks), then matches by mutual nearest neighbour of texture
similarity × semantic similarity. Since nothing crosses images, `refine` runs once per image and
`tiepoint.Matcher.extract` stores the refined descriptors (texture ‖ semantic, 2×256) in the
`Features`, so reconstruction extracts once per image; `_forward` only matches.

The architecture of a released model lives in its zip's `model_config.yaml`: with weights (the
`features` preset's release, or `weights=` a zip/folder) the layers, heads, conditioning, DINOv2
size and descriptor dimension come from there (see `reasoning_checkpoint`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ...config import lookup
from ...errors import ConfigError, ImageError, WeightsError
from ...weights import load_state_dict, resolve
from ..backbones.dinov2 import ARCHS, DINOv2, floor_to_patch
from ..base import FeatureMatcher, load_state_strict
from ..losses import matcher_metrics
from .nearest_neighbor import matches1_from_matches0
from .reasoning_checkpoint import Release, read_release
from .reasoning_head import (
    ReasoningHead,
    dual_softmax_nll,
    mutual_nn,
    reasoning_similarity,
    resize_long_edge,
    sample_semantic,
)

logger = logging.getLogger("tiepoint")

# base extractor → its descriptor dimension and the official release trained on it
FEATURES = {
    "xfeat": {"extractor_dim": 64, "weights": "reasoning_xfeat"},
    "superpoint": {"extractor_dim": 256, "weights": "reasoning_superpoint"},
    "aliked": {"extractor_dim": 128, "weights": "reasoning_aliked"},
    "alike": {"extractor_dim": 128, "weights": "reasoning_alike"},
    "dedode_B": {"extractor_dim": 256, "weights": "reasoning_dedode_B"},
    "dedode_G": {"extractor_dim": 256, "weights": "reasoning_dedode_G"},
}
ARCH_KEYS = (
    "extractor_dim",
    "features_dim",
    "layers",
    "heads",
    "semantic_conditioning",
    "interpolation",
    "semantic_backbone",
    "long_side",
)


def _locate(name_or_path) -> Path:
    """A release folder as is; else a file or registered name through the resolver."""
    path = Path(name_or_path)
    return path if path.is_dir() else resolve(name_or_path)


def _is_release(path: Path) -> bool:
    """A release zip or unpacked folder (a PyTorch file is a zip too, so the suffix decides)."""
    return path.is_dir() or path.suffix.lower() == ".zip"


class Reasoning(FeatureMatcher):
    default_conf = {
        "features": None,  # base extractor preset (FEATURES): its dimension and release
        "extractor_dim": None,
        "semantic_backbone": "dinov2_vits14",
        # "official": the registered file of `semantic_backbone`; a path; null: random (tests/demos)
        "dino_weights": "official",
        "features_dim": 256,
        "layers": 5,  # the training defaults of the released models (the class default is 14)
        "heads": 1,
        "semantic_conditioning": True,
        "long_side": 896,  # DINOv2 input: long side resized to this, then floored to ×14
        "interpolation": "bicubic",
        "weights": None,  # a release zip/folder (or registered name); default: the preset's
        "pretrained": True,  # load the preset's release when weights is None
        "checkpoint": None,  # which *.pt of the release (default: the newest)
        "trainable": True,  # the head (DINOv2 stays frozen)
        # training only: 0.25 × the dual-softmax NLL (the reference's weight); GT radius in px
        "loss": {"matchable_weight": 0.25, "th_gt": 3.0},
    }
    required_data_keys = ["descriptors0", "descriptors1"]
    inference_keys = ("long_side",)
    feature_presets = FEATURES

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        names = super().weight_names(conf)  # the release zip
        conf = cls.build_conf(conf)
        if conf.dino_weights == "official":
            names.append(conf.semantic_backbone)
        elif conf.dino_weights:
            names.append(conf.dino_weights)
        return names

    @classmethod
    def conf_for_weights(cls, weights, conf):
        """The config to build before `load_weights(weights)`: the release brings the
        architecture, so it is read while building (see `_init`)."""
        return cls.build_conf(conf, {"weights": str(weights)})

    def _release(self, conf) -> Release | None:
        name = conf.weights
        if name is None and conf.features is not None and conf.pretrained:
            name = FEATURES[conf.features]["weights"]
        if name is None:
            return None
        path = _locate(name)
        return read_release(path, conf.checkpoint) if _is_release(path) else None

    def _init(self, conf):
        release = self._release(conf)
        arch = {k: conf[k] for k in ARCH_KEYS}
        if release is not None:
            arch.update(release.arch)
        if arch["extractor_dim"] is None:
            raise ConfigError(
                "reasoning matcher needs `features` (one of "
                f"{sorted(FEATURES)}) or `extractor_dim`, or release weights"
            )
        self.arch = arch
        semantic_dim = lookup(ARCHS, arch["semantic_backbone"], "DINOv2 model")[0]
        self.head = ReasoningHead(
            arch["extractor_dim"], semantic_dim, arch["features_dim"], arch["layers"], arch["heads"]
        )
        self.dino = DINOv2(arch["semantic_backbone"]).eval()
        for p in self.dino.parameters():
            p.requires_grad_(False)
        if conf.dino_weights:
            name = (
                arch["semantic_backbone"] if conf.dino_weights == "official" else conf.dino_weights
            )
            load_state_strict(self.dino, load_state_dict(name), name, "DINOv2")
        else:
            logger.warning("reasoning: DINOv2 left randomly initialised (dino_weights=null)")
        if release is not None:
            load_state_strict(self.head, release.state, release.source, "Descriptor Reasoning head")
        elif conf.weights is not None:  # a state dict of the head in tiepoint's layout
            self.load_weights(conf.weights)

    def load_weights(self, name_or_path) -> None:
        """A release zip/folder (architecture must match this model's), or a state dict of the
        head in tiepoint's layout."""
        path = _locate(name_or_path)
        if _is_release(path):
            release = read_release(path, self.conf.checkpoint)
            wrong = {k: v for k, v in release.arch.items() if self.arch.get(k) != v}
            if wrong:
                raise WeightsError(
                    f"{path}: release architecture differs from this model ({wrong})"
                )
            load_state_strict(self.head, release.state, release.source, "Descriptor Reasoning head")
        else:
            load_state_strict(self.head, load_state_dict(path), path, "Descriptor Reasoning head")

    def train(self, mode: bool = True):
        super().train(mode)
        self.dino.eval()  # frozen, always
        return self

    def semantic_map(self, image: torch.Tensor) -> tuple[torch.Tensor, float]:
        """(B,1|3,H,W) in [0,1], no ImageNet normalisation → DINOv2 map and the keypoint scale."""
        if image.ndim != 4 or image.shape[1] not in (1, 3):
            raise ImageError(f"reasoning expects an image (B, 1|3, H, W), got {tuple(image.shape)}")
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        resized, scale = resize_long_edge(image.float(), self.arch["long_side"])
        with torch.no_grad():
            return self.dino(floor_to_patch(resized)), scale

    def refine(self, image, keypoints, descriptors, fmap=None, scale=None, semantic=None) -> dict:
        """One image's keypoints (B,N,2) and descriptors (B,N,D) → the head's outputs (every
        layer, for deep supervision) and `descriptors` = texture ‖ semantic (B,N,2·256).
        `fmap`/`scale`: a cached DINOv2 map and the keypoint scale into its input; `semantic`:
        the map already sampled at the keypoints (training, feature cache)."""
        d = self.arch["extractor_dim"]
        if descriptors.shape[-1] != d:
            raise ConfigError(
                f"reasoning: descriptors of dimension {descriptors.shape[-1]} do not fit this "
                f"Descriptor Reasoning model, trained on {d}-D descriptors"
            )
        if semantic is not None:
            sem = semantic.float()
        else:
            if fmap is None:
                fmap, scale = self.semantic_map(image)
            sem = sample_semantic(keypoints.float() * scale, fmap, self.arch["interpolation"])
        out = self.head(descriptors.float(), sem)
        out["descriptors"] = torch.cat([out["reasoning_features"], out["semantic_features"]], -1)
        out["dino_features"] = sem
        return out

    @torch.no_grad()
    def frozen_features(self, image: torch.Tensor, keypoints: torch.Tensor) -> dict:
        """The frozen part of the refinement (DINOv2 sampled at the keypoints, (B,N,C)), which
        `TwoViewPipeline.extract` adds to the extractor's output so the feature cache stores it."""
        fmap, scale = self.semantic_map(image)
        return {
            "semantic": sample_semantic(keypoints.float() * scale, fmap, self.arch["interpolation"])
        }

    def refine_features(self, data: dict) -> dict:
        """`Matcher.extract`'s hook: extractor output + `image` → refined `descriptors`."""
        out = self.refine(data["image"], data["keypoints"], data["descriptors"])
        return {"descriptors": out["descriptors"]}

    def _split(self, data: dict, i: str) -> tuple[torch.Tensor, torch.Tensor]:
        desc, dim = data[f"descriptors{i}"], self.arch["features_dim"]
        if desc.shape[-1] != 2 * dim:
            if f"image{i}" not in data:
                raise ConfigError(
                    f"reasoning matches refined descriptors (texture ‖ semantic, {2 * dim}-D); "
                    f"descriptors{i} are {desc.shape[-1]}-D and there is no image{i} to refine "
                    "them (extract through tiepoint.Matcher)"
                )
            desc = self.refine(data[f"image{i}"], data[f"keypoints{i}"], desc)["descriptors"]
        return desc[..., :dim], desc[..., dim:]

    def _forward(self, data: dict) -> dict:
        deep = {}
        if "semantic0" in data and data["descriptors0"].shape[-1] == self.arch["extractor_dim"]:
            # training (TwoViewPipeline): refine here, with gradients, keeping every layer
            refined = [
                self.refine(
                    None,
                    data[f"keypoints{i}"],
                    data[f"descriptors{i}"],
                    semantic=data[f"semantic{i}"],
                )
                for i in "01"
            ]
            for i, r in zip("01", refined):
                deep[f"all_reasoning_features{i}"] = r["all_reasoning_features"]
                deep[f"all_semantic_features{i}"] = r["all_semantic_features"]
            dim = self.arch["features_dim"]
            (f0, s0), (f1, s1) = [
                (r["descriptors"][..., :dim], r["descriptors"][..., dim:]) for r in refined
            ]
        else:
            f0, s0 = self._split(data, "0")
            f1, s1 = self._split(data, "1")
        sim = reasoning_similarity(f0, s0, f1, s1, self.arch["semantic_conditioning"])
        m0, _ = mutual_nn(sim)
        m1 = matches1_from_matches0(m0, sim.shape[2])
        score0 = torch.where(m0 > -1, sim.gather(2, m0.clamp(min=0)[..., None])[..., 0], 0)
        score0 = score0.clamp(min=0)
        score1 = torch.zeros(m1.shape, device=sim.device)
        bi, j = torch.where(m1 > -1)
        score1[bi, j] = score0[bi, m1[bi, j]]
        return {
            "matches0": m0,
            "matches1": m1,
            "matching_scores0": score0,
            "matching_scores1": score1,
            **deep,
        }

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """The reference's deep-supervised dual-softmax NLL, averaged over layers, ×
        `matchable_weight`; per pair (B,). GT index pairs: `gt_pairs` (a list of (K,2) tensors)
        when given, else the reference's rule from `gt_proj_0to1` (each valid keypoint of image 0
        reprojected; its nearest keypoint of image 1 within `loss.th_gt` px, no mutual check).
        The reference's unmatchable term is never filled (always 0), so it is left out here
        (docs/reasoning.md)."""
        pairs_list = data.get("gt_pairs")
        if pairs_list is None:
            pairs_list = gt_pairs_nearest(
                data["gt_proj_0to1"], data["keypoints1"], self.conf.loss.th_gt,
                data.get("mask0"), data.get("mask1"),
            )  # fmt: skip
        layers = pred["all_reasoning_features0"].shape[0]
        cond = self.arch["semantic_conditioning"]
        per_pair = []
        for b, pairs in enumerate(pairs_list):
            terms = [
                dual_softmax_nll(
                    pred["all_reasoning_features0"][li, b],
                    pred["all_semantic_features0"][li, b],
                    pred["all_reasoning_features1"][li, b],
                    pred["all_semantic_features1"][li, b],
                    pairs[:, 0],
                    pairs[:, 1],
                    cond,
                )
                for li in range(layers)
            ]
            per_pair.append(torch.stack(terms).mean())
        nll = torch.stack(per_pair)
        total = self.conf.loss.matchable_weight * nll
        num = torch.tensor([float(len(p)) for p in pairs_list], device=nll.device)
        metrics = matcher_metrics(pred, data) if "gt_matches0" in data else {}
        return {"total": total, "nll": nll, "num_gt": num}, metrics


def gt_pairs_nearest(proj0, kp1, th, mask0=None, mask1=None) -> list[torch.Tensor]:
    """Per pair, (K,2) index pairs (i, j): keypoint j of image 1 is the nearest to keypoint i of
    image 0 reprojected (`proj0` (B,M,2), non-finite = unknown) and closer than `th` px."""
    d = torch.cdist(torch.nan_to_num(proj0.float(), nan=1e9, posinf=1e9, neginf=1e9), kp1.float())
    if mask1 is not None:
        d = d.masked_fill(~mask1[:, None].bool(), float("inf"))
    dmin, j = d.min(-1)
    ok = (dmin < th) & torch.isfinite(proj0).all(-1)
    if mask0 is not None:
        ok &= mask0.bool()
    return [torch.stack([torch.where(o)[0], jj[o]], -1) for o, jj in zip(ok, j)]
