"""The model that training optimises for dense matchers (DKM): the dense model, its multi-scale
loss against dense ground truth, and the validation metrics.

`DenseTwoViewPipeline` reads the same batches as `TwoViewPipeline` (`view0/view1.image` RGB in
[0, 1], `H_0to1` or `T_0to1` + depth) and trains ONE direction, image 0 → image 1, as DKM's
training does. The dense model's `forward` must return `scales`:
`{s: {"warp": (B,h,w,2|4), "certainty": (B,h,w) logits}}` (the contract's layout) — DKM's own
`{s: {"flow"|"dense_flow": (B,2,h,w), "logits"|"dense_certainty": (B,1,h,w)}}` is accepted too.
A symmetric model returns 2B rows per scale (rows 0..B−1: image 0 → 1); only those are used, and
a model whose config has `symmetric` is built with `symmetric: false` unless the config says
otherwise, so it does not compute the other direction for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from omegaconf import DictConfig, OmegaConf

from ..errors import ConfigError
from ..geometry.dense_gt import dense_gt
from . import model_class
from .base import BaseModel
from .dense.losses import dense_metrics, dkm_loss, dkm_zero_shot_loss

# pipeline-side defaults of the dense model's config (only keys its class has are set)
TRAINING_DEFAULTS = {"trainable": True, "symmetric": False}


def dense_training_conf(conf: Mapping) -> DictConfig:
    """The dense model's config as trained: `TRAINING_DEFAULTS` (keys the class knows) ⊕ `conf`."""
    if not conf or not conf.get("name"):
        raise ConfigError("model.dense.name is missing")
    known = model_class("dense", conf["name"]).full_default_conf()
    defaults = {k: v for k, v in TRAINING_DEFAULTS.items() if k in known}
    plain = OmegaConf.to_container(conf) if isinstance(conf, DictConfig) else dict(conf)
    return OmegaConf.merge(defaults, plain)


def _scale_layout(d: Mapping, b: int, where: str) -> dict:
    """One scale's prediction → {"warp": (B,h,w,2), "certainty": (B,h,w)}, first B rows."""
    if "warp" in d:
        warp, cert = d["warp"], d["certainty"]
    else:
        flow = d.get("flow", d.get("dense_flow"))
        cert = d.get("logits", d.get("dense_certainty"))
        if flow is None or cert is None:
            raise ConfigError(
                f"dense model output scales[{where}] has neither warp/certainty nor "
                f"flow/logits (got {sorted(d)})"
            )
        warp = flow.permute(0, 2, 3, 1)
    if warp.shape[-1] == 4:  # (x0, y0, x1, y1) rows: the target is the last two
        warp = warp[..., 2:]
    if cert.dim() == 4:
        cert = cert[:, 0]
    if warp.shape[0] not in (b, 2 * b) or cert.shape[0] != warp.shape[0]:
        raise ConfigError(
            f"dense model output scales[{where}] has {warp.shape[0]} rows for a batch of {b}"
        )
    return {"warp": warp[:b], "certainty": cert[:b]}


class DenseTwoViewPipeline(BaseModel):
    trained: ClassVar[str] = "dense"  # the submodule training optimises and checkpoints
    default_conf = {
        "dense": None,  # dense model config ({name: dkm, preset: outdoor, pretrained: false})
        "loss": {  # models/dense/losses.py dkm_loss
            "ce_weight": 0.01,
            "local_loss": True,
            "local_dist": 4.0,
            "local_largest_scale": 8,
            "rel_depth_tol": 0.05,  # depth GT: relative depth agreement (occlusion check)
            "zs_max_labels": 2048,  # GIM video labels: random labels per pair in the ZS loss
        },
        "pck_thresholds": [1, 3, 5],  # validation PCK@t, in pixels of image 1
    }

    def _init(self, conf: DictConfig) -> None:
        dconf = dense_training_conf(conf.dense)
        self.dense = model_class("dense", dconf.name)(dconf)

    def _forward(self, data: dict) -> dict:
        image0, image1 = data["view0"]["image"], data["view1"]["image"]
        pred = self.dense({"image0": image0, "image1": image1})
        if "scales" not in pred:
            raise ConfigError(
                f"{type(self.dense).__name__} returns no per-scale predictions ('scales'): "
                "it cannot be trained with the DKM loss"
            )
        b = image0.shape[0]
        scales = {int(s): _scale_layout(d, b, str(s)) for s, d in pred["scales"].items()}
        return {"scales": scales}

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """DKM's multi-scale loss; metrics (B,): EPE and PCK of the finest scale in image-1 pixels."""
        lc = self.conf.loss
        if "pseudo_labels" in data:  # GIM video labels: the zero-shot loss at the labels
            num = torch.as_tensor(data["num_labels"]).reshape(-1)
            lab = data["pseudo_labels"][:, : max(int(num.max()), 1)]
            im0, im1 = data["view0"]["image"], data["view1"]["image"]
            return dkm_zero_shot_loss(
                pred,
                lab.to(im0.device),
                num,
                (im0.shape[-1], im0.shape[-2]),
                (im1.shape[-1], im1.shape[-2]),
                max_labels=int(lc.zs_max_labels),
            )
        cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}

        def gt(hw):
            if hw not in cache:
                cache[hw] = dense_gt(data, hw, lc.rel_depth_tol)
            return cache[hw]

        losses, _ = dkm_loss(
            pred,
            gt,
            ce_weight=lc.ce_weight,
            local_loss=lc.local_loss,
            local_dist=lc.local_dist,
            local_largest_scale=lc.local_largest_scale,
        )
        finest = pred["scales"][min(pred["scales"])]
        warp = finest["warp"]
        gt_warp, prob = gt(tuple(warp.shape[1:3]))
        img1 = data["view1"]["image"]
        metrics = dense_metrics(
            warp.detach(),
            gt_warp.to(warp.device),
            prob.to(warp.device),
            size=(img1.shape[-1], img1.shape[-2]),
            thresholds=tuple(self.conf.pck_thresholds),
        )
        return losses, metrics
