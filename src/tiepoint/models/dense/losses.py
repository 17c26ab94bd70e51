"""DKM's multi-scale regression loss and the dense validation metrics (EPE, PCK).

Predictions come per scale (stride w.r.t. the network input: 32, 16, 8, 4, 2, 1) as
`pred["scales"] = {s: {"warp": (B,h,w,2), "certainty": (B,h,w)}}` — normalised target coordinates
in image 1 (DKM's convention, see `geometry.dense_gt`) and certainty *logits*. DKM's own layout
`{s: {"dense_flow": (B,2,h,w), "dense_certainty": (B,1,h,w)}}` is accepted too.

The ground truth is computed at each scale's own grid (cell centres), exactly as DKM's
`DepthRegressionLoss` calls `warp_kpts` per scale — never resampled from a finer GT.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F

from ...errors import ConfigError
from ...geometry.dense_gt import dense_gt

GTFn = Callable[[tuple[int, int]], tuple[torch.Tensor, torch.Tensor]]


def scale_predictions(pred: Mapping) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """{scale: (warp (B,h,w,2), certainty logits (B,h,w))}, coarse to fine."""
    scales = pred.get("scales")
    if not isinstance(scales, Mapping) or not scales:
        raise ConfigError("dense loss: the prediction has no per-scale outputs (pred['scales'])")
    out = {}
    for s, d in scales.items():
        if "warp" in d:
            warp, cert = d["warp"], d["certainty"]
        elif "dense_flow" in d:
            warp, cert = d["dense_flow"].permute(0, 2, 3, 1), d["dense_certainty"]
        else:
            raise ConfigError(
                f"dense loss: scale {s} has neither warp/certainty nor dense_flow/dense_certainty"
            )
        if warp.shape[-1] == 4:  # (x0, y0, x1, y1) rows: the target is the last two
            warp = warp[..., 2:]
        if cert.dim() == 4:
            cert = cert[:, 0]
        out[int(s)] = (warp, cert)
    return dict(sorted(out.items(), reverse=True))


def _gt_fn(gt: GTFn | Mapping, rel_depth_tol: float) -> GTFn:
    if callable(gt):
        return gt
    return lambda hw: dense_gt(gt, hw, rel_depth_tol)


def dkm_loss(
    pred: Mapping,
    gt: GTFn | Mapping,
    ce_weight: float = 0.01,
    local_loss: bool = True,
    local_dist: float = 4.0,
    local_largest_scale: int = 8,
    rel_depth_tol: float = 0.05,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Sum over scales of ce_weight·BCE(certainty, prob) + mean EPE over prob > 0.

    `gt` is a training batch (`geometry.dense_gt.dense_gt` reads H_0to1 or T_0to1 + depth) or a
    function (h, w) → (warp (B,h,w,2), prob (B,h,w)). At scales ≤ `local_largest_scale`, a cell
    also needs the coarser scale's error (nearest-upsampled) below (2/512)·local_dist·scale: a
    refiner only sees a local window, so it is not blamed for the coarse stage's gross mistakes
    (DKM's reasoning) — but its certainty is taught to be low there.
    Returns (losses: scalar `total` plus detached `ce_<s>`/`epe_<s>`, metrics at the finest
    scale: per-pair (B,) `epe`, `pck@1/3/5` in pixels of that grid).
    """
    fn = _gt_fn(gt, rel_depth_tol)
    total, prev_gd = None, None
    losses: dict[str, torch.Tensor] = {}
    cache: dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor]] = {}
    finest = None
    for s, (warp, cert) in scale_predictions(pred).items():
        b, h, w, _ = warp.shape
        if (h, w) not in cache:
            gw, gp = fn((h, w))
            cache[(h, w)] = (gw.to(warp.device, torch.float32), gp.to(warp.device, torch.float32))
        gt_warp, prob = cache[(h, w)]
        gd = (warp.float() - gt_warp).norm(dim=-1)
        if local_loss and s <= local_largest_scale and prev_gd is not None:
            near = F.interpolate(prev_gd[:, None], size=(h, w), mode="nearest")[:, 0]
            prob = prob * (near < (2 / 512) * local_dist * s)
        ce = F.binary_cross_entropy_with_logits(cert.float(), prob)
        pos = prob > 0
        epe = gd[pos].mean() if bool(pos.any()) else (gd * 0).mean()
        scale_loss = ce_weight * ce + epe
        total = scale_loss if total is None else total + scale_loss
        losses[f"ce_{s}"], losses[f"epe_{s}"] = ce.detach(), epe.detach()
        prev_gd = gd.detach()
        finest = (warp.detach(), *cache[(h, w)])
    losses["total"] = total
    return losses, dense_metrics(*finest)


@torch.no_grad()
def dense_metrics(
    warp: torch.Tensor,
    gt_warp: torch.Tensor,
    prob: torch.Tensor,
    size: tuple[float, float] | None = None,
    thresholds: tuple[float, ...] = (1, 3, 5),
) -> dict[str, torch.Tensor]:
    """Per-pair (B,) end-point error and PCK@t over the cells where prob > 0, in pixels.

    Normalised differences are converted with `size` = (W, H) of image 1 in pixels (default: the
    prediction grid itself, i.e. pixels of the finest grid). NaN for a pair without valid cells.
    """
    b, h, w, _ = warp.shape
    wh = torch.tensor(size if size is not None else (w, h), dtype=torch.float32, device=warp.device)
    err = ((warp.float() - gt_warp.float()) * wh / 2).norm(dim=-1).reshape(b, -1)
    valid = (prob > 0).reshape(b, -1)
    n = valid.sum(1)
    nan = torch.full_like(n, float("nan"), dtype=torch.float32)

    def ratio(num):
        return torch.where(n > 0, num / n.clamp(min=1), nan)

    out = {"epe": ratio(torch.where(valid, err, torch.zeros_like(err)).sum(1))}
    for t in thresholds:
        out[f"pck@{t:g}"] = ratio(((err < t) & valid).sum(1).float())
    return out


def dkm_zero_shot_loss(
    pred: Mapping,
    labels: torch.Tensor,
    num_labels: torch.Tensor,
    size0,
    size1,
    max_labels: int = 2048,
    generator: torch.Generator | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """GIM-DKM's loss on video labels (`train-gim-dkm:modules/loss.py`): at every scale, sample
    the predicted warp (bilinear) at up to `max_labels` random labels of image 0 and take the L2
    distance to the label in image 1, in normalised coordinates; mean per pair, then over the
    batch, summed over scales (like `dkm_loss`). GIM's certainty BCE on pseudo labels is not
    added (GIM computes it and leaves it out). `labels` (B,P,4) pixels of images with sizes
    `size0`/`size1` (W,H); `num_labels` (B,) valid rows. Metrics (B,): EPE and PCK@1/3/5 at the
    labels at the finest scale, in image-1 pixels."""
    b, p = labels.shape[:2]
    dev = labels.device
    k = torch.as_tensor(num_labels, device=dev).reshape(-1)
    valid = torch.arange(p, device=dev)[None] < k[:, None]
    if p > max_labels:  # a uniform random subset of each pair's valid labels
        r = torch.rand(b, p, generator=generator).to(dev).masked_fill(~valid, 2.0)
        rank = r.argsort(1).argsort(1)
        valid = valid & (rank < max_labels)
    wh0 = torch.as_tensor(size0, dtype=torch.float32, device=dev).reshape(-1, 2).expand(b, 2)
    wh1 = torch.as_tensor(size1, dtype=torch.float32, device=dev).reshape(-1, 2).expand(b, 2)
    u0 = (labels[..., :2].float() + 0.5) / wh0[:, None] * 2 - 1
    u1 = (labels[..., 2:4].float() + 0.5) / wh1[:, None] * 2 - 1
    n = valid.sum(1).clamp(min=1)
    total, losses, finest = None, {}, None
    for s, (warp, _) in scale_predictions(pred).items():
        at = F.grid_sample(
            warp.permute(0, 3, 1, 2).float(), u0[:, :, None], "bilinear", align_corners=False
        )[..., 0].transpose(1, 2)  # (B,P,2)
        d = (at - u1).norm(dim=-1)
        per_pair = (d * valid).sum(1) / n
        scale_loss = per_pair.mean()
        total = scale_loss if total is None else total + scale_loss
        losses[f"zs_epe_{s}"] = scale_loss.detach()
        finest = at.detach()
    losses["total"] = total
    with torch.no_grad():
        err = ((finest - u1) * wh1[:, None] / 2).norm(dim=-1)
        metrics = {"epe": (err * valid).sum(1) / n}
        for t in (1, 3, 5):
            metrics[f"pck@{t}"] = ((err < t) & valid).sum(1).float() / n
    return losses, metrics
