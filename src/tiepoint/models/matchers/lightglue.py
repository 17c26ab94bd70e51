"""LightGlue (Lindenberger, Sarlin, Pollefeys, ICCV 2023): a transformer that matches two sets of local
features, with adaptive depth (early exit) and width (point pruning).

Each layer runs self-attention in both images (rotary encoding of the keypoint positions) and one
bidirectional cross-attention; a per-layer head turns descriptors into a log-assignment of size
(M+1)×(N+1): a dual softmax over the similarity plus a matchability term, with dustbins for points
that have no match. The module names follow the official state dicts so their weights load as is.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from ... import weights as weights_lib
from ...errors import ConfigError
from ..base import FeatureMatcher, load_state_strict, no_matches
from ..losses import confidence_loss, deep_supervision_loss, matcher_metrics

# Defaults of the official weights for each feature type: (input_dim, add_scale_ori, weights name)
FEATURES = {
    "superpoint": {"input_dim": 256, "add_scale_ori": False, "weights": "superpoint_lightglue"},
    "disk": {"input_dim": 128, "add_scale_ori": False, "weights": "disk_lightglue"},
    "aliked": {"input_dim": 128, "add_scale_ori": False, "weights": "aliked_lightglue"},
    "sift": {"input_dim": 128, "add_scale_ori": True, "weights": "sift_lightglue"},
    # LighterGlue: the smaller LightGlue trained by the XFeat authors for 64-d XFeat descriptors
    "xfeat": {
        "input_dim": 64,
        "descriptor_dim": 96,
        "n_layers": 6,
        "num_heads": 1,
        "depth_confidence": -1,
        "width_confidence": 0.95,
        "filter_threshold": 0.1,
        "weights": "xfeat-lighterglue",
    },
}


def normalize_keypoints(kpts: torch.Tensor, size: torch.Tensor | None = None) -> torch.Tensor:
    """Map pixel coordinates so the long image side spans [-1, 1] (centre at 0)."""
    if size is None:
        size = 1 + kpts.max(-2).values - kpts.min(-2).values
    size = size.to(kpts)
    shift = size / 2
    scale = size.max(-1).values / 2
    return (kpts - shift[..., None, :]) / scale[..., None, None]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) → (−x2, x1) on consecutive pairs of the last dimension."""
    x = x.unflatten(-1, (-1, 2))
    x1, x2 = x.unbind(-1)
    return torch.stack((-x2, x1), dim=-1).flatten(start_dim=-2)


def apply_rotary(freqs: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return t * freqs[0] + rotate_half(t) * freqs[1]


class LearnableFourierPositionalEncoding(nn.Module):
    """Rotary frequencies from a learned linear projection of the (normalised) keypoint position."""

    def __init__(self, m: int, dim: int, gamma: float = 1.0):
        super().__init__()
        self.Wr = nn.Linear(m, dim // 2, bias=False)
        nn.init.normal_(self.Wr.weight.data, mean=0, std=gamma**-2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, N, m) → (2, B, 1, N, dim): cos and sin, each repeated for both members of a pair."""
        projected = self.Wr(x)
        emb = torch.stack([torch.cos(projected), torch.sin(projected)], 0).unsqueeze(-3)
        return emb.repeat_interleave(2, dim=-1)


def _ffn(dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2 * dim, 2 * dim),
        nn.LayerNorm(2 * dim, elementwise_affine=True),
        nn.GELU(),
        nn.Linear(2 * dim, dim),
    )


class SelfBlock(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.Wqkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)

    def forward(self, x: torch.Tensor, encoding: torch.Tensor, mask=None) -> torch.Tensor:
        """`mask` (B, 1, 1, N) bool: which keys are real points (padded batches); None: all."""
        # The official weights group the 3·d outputs per head as (head_dim, 3), i.e. q, k, v interleaved.
        # Reordering the weight rows to (3, heads, head_dim) gives q, k, v with unit stride in the last
        # dimension, which lets scaled_dot_product_attention use its fused kernel (≈4× faster on CPU).
        w = self.Wqkv.weight.unflatten(0, (self.heads, -1, 3)).permute(2, 0, 1, 3).flatten(0, 2)
        b = self.Wqkv.bias.unflatten(0, (self.heads, -1, 3)).permute(2, 0, 1).flatten()
        q, k, v = (
            F.linear(x, w, b).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4).unbind(0)
        )
        q, k = apply_rotary(encoding, q), apply_rotary(encoding, k)
        context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        message = self.out_proj(context.transpose(1, 2).flatten(start_dim=-2))
        return x + self.ffn(torch.cat([x, message], -1))


class CrossBlock(nn.Module):
    """Bidirectional cross-attention with shared query/key projections.

    Both directions use the same similarity qk0·qk1ᵀ, softmaxed along each axis; two fused attention
    calls compute exactly that without materialising the M×N matrix, which is faster on CPU.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.to_qk = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        return t.unflatten(-1, (self.heads, -1)).transpose(1, 2)

    def forward(
        self, x0: torch.Tensor, x1: torch.Tensor, mask0=None, mask1=None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """`mask0`/`mask1` (B, 1, 1, M|N) bool: the real points of each set (padded batches)."""
        qk0, qk1 = self._heads(self.to_qk(x0)), self._heads(self.to_qk(x1))
        v0, v1 = self._heads(self.to_v(x0)), self._heads(self.to_v(x1))
        m0 = F.scaled_dot_product_attention(qk0, qk1, v1, attn_mask=mask1)
        m1 = F.scaled_dot_product_attention(qk1, qk0, v0, attn_mask=mask0)
        m0 = self.to_out(m0.transpose(1, 2).flatten(start_dim=-2))
        m1 = self.to_out(m1.transpose(1, 2).flatten(start_dim=-2))
        x0 = x0 + self.ffn(torch.cat([x0, m0], -1))
        x1 = x1 + self.ffn(torch.cat([x1, m1], -1))
        return x0, x1


class TransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.self_attn = SelfBlock(dim, heads)
        self.cross_attn = CrossBlock(dim, heads)

    def forward(self, desc0, desc1, encoding0, encoding1, mask0=None, mask1=None):
        desc0 = self.self_attn(desc0, encoding0, mask0)
        desc1 = self.self_attn(desc1, encoding1, mask1)
        return self.cross_attn(desc0, desc1, mask0, mask1)


def log_double_softmax(sim: torch.Tensor, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
    """(B,M,N) similarity and (B,M,1)/(B,N,1) matchability logits → (B,M+1,N+1) log-assignment."""
    b, m, n = sim.shape
    certainties = F.logsigmoid(z0) + F.logsigmoid(z1).transpose(1, 2)
    scores = sim.new_zeros((b, m + 1, n + 1))
    scores[:, :m, :n] = F.log_softmax(sim, 2) + F.log_softmax(sim, 1) + certainties
    scores[:, :-1, -1] = F.logsigmoid(-z0.squeeze(-1))
    scores[:, -1, :-1] = F.logsigmoid(-z1.squeeze(-1))
    return scores


class MatchAssignment(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim
        self.matchability = nn.Linear(dim, 1, bias=True)
        self.final_proj = nn.Linear(dim, dim, bias=True)

    def forward(
        self, desc0: torch.Tensor, desc1: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mdesc0 = self.final_proj(desc0) / self.dim**0.25
        mdesc1 = self.final_proj(desc1) / self.dim**0.25
        sim = mdesc0 @ mdesc1.transpose(1, 2)
        scores = log_double_softmax(sim, self.matchability(desc0), self.matchability(desc1))
        return scores, sim

    def get_matchability(self, desc: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.matchability(desc)).squeeze(-1)


class TokenConfidence(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.token = nn.Sequential(nn.Linear(dim, 1), nn.Sigmoid())

    def forward(self, desc0: torch.Tensor, desc1: torch.Tensor):
        return self.token(desc0.detach()).squeeze(-1), self.token(desc1.detach()).squeeze(-1)

    def logits(self, desc: torch.Tensor) -> torch.Tensor:
        """Pre-sigmoid confidence (for the BCE-with-logits training loss)."""
        return self.token[0](desc.detach()).squeeze(-1)


def filter_matches(scores: torch.Tensor, th: float):
    """Mutual argmax over the M×N block of a log-assignment, kept if exp(score) > th."""
    max0, max1 = scores[:, :-1, :-1].max(2), scores[:, :-1, :-1].max(1)
    m0, m1 = max0.indices, max1.indices
    ind0 = torch.arange(m0.shape[1], device=m0.device)[None]
    ind1 = torch.arange(m1.shape[1], device=m1.device)[None]
    mutual0 = ind0 == m1.gather(1, m0)
    mutual1 = ind1 == m0.gather(1, m1)
    zero = scores.new_tensor(0)
    mscores0 = torch.where(mutual0, max0.values.exp(), zero)
    mscores1 = torch.where(mutual1, mscores0.gather(1, m1), zero)
    valid0 = mutual0 & (mscores0 > th)
    valid1 = mutual1 & valid0.gather(1, m1)
    m0 = torch.where(valid0, m0, -1)
    m1 = torch.where(valid1, m1, -1)
    return m0, m1, torch.where(valid0, mscores0, zero), torch.where(valid1, mscores1, zero)


_LEGACY = re.compile(r"^(self_attn|cross_attn)\.(\d+)\.")


def convert_state_dict(state: dict) -> dict:
    """Accept the official files (legacy flat `self_attn.{i}` keys or current names), `matcher.`-prefixed
    checkpoints (LighterGlue, Glue Factory and tiepoint training), `{"model": ...}` wrappers and GIM's
    Lightning checkpoints (`state_dict` with `model.*` LightGlue and `superpoint.*` keys)."""
    if isinstance(state.get("state_dict"), dict):  # Lightning (GIM's gim_lightglue_100h.ckpt)
        state = state["state_dict"]
    if any(k.startswith("superpoint.") for k in state):  # GIM: `superpoint.*` + `model.*`
        state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if any(k.startswith("matcher.") for k in state):
        state = {k[len("matcher.") :]: v for k, v in state.items() if k.startswith("matcher.")}
    out = {}
    for k, v in state.items():
        k = _LEGACY.sub(lambda m: f"transformers.{m.group(2)}.{m.group(1)}.", k)
        if re.fullmatch(r"log_assignment\.\d+\.r", k) or k == "confidence_thresholds":
            continue  # stray buffers of some exports; thresholds are recomputed
        out[k] = v
    return out


class LightGlue(FeatureMatcher):
    default_conf = {
        "features": None,  # superpoint | disk | aliked | sift | xfeat: presets below apply first
        "input_dim": 256,
        "descriptor_dim": 256,
        "add_scale_ori": False,
        "n_layers": 9,
        "num_heads": 4,
        "depth_confidence": 0.95,  # early exit; -1 disables
        "width_confidence": 0.99,  # point pruning; -1 disables
        "filter_threshold": 0.1,
        "pruning_min_keypoints": 0,  # prune only while a set has more points than this
        "weights": None,  # registered name or path; None with `features` → official weights
        "pretrained": True,  # load the official weights of `features` when weights is None
        "loss": {"gamma": 1.0, "nll_balancing": 0.5, "confidence_weight": 1.0},  # training only
    }

    inference_keys = ("depth_confidence", "width_confidence", "filter_threshold")
    supports_padding = True  # `padded_batch` with `mask0`/`mask1` (`_forward_padded`)

    feature_presets = FEATURES

    def _init(self, conf):
        d, h = conf.descriptor_dim, conf.num_heads
        self.input_proj = nn.Linear(conf.input_dim, d) if conf.input_dim != d else nn.Identity()
        self.posenc = LearnableFourierPositionalEncoding(2 + 2 * conf.add_scale_ori, d // h)
        self.transformers = nn.ModuleList([TransformerLayer(d, h) for _ in range(conf.n_layers)])
        self.log_assignment = nn.ModuleList([MatchAssignment(d) for _ in range(conf.n_layers)])
        self.token_confidence = nn.ModuleList(
            [TokenConfidence(d) for _ in range(conf.n_layers - 1)]
        )
        thresholds = [self.confidence_threshold(i) for i in range(conf.n_layers)]
        self.register_buffer("confidence_thresholds", torch.tensor(thresholds), persistent=False)
        for name in self.weight_names(conf):
            self.load_weights(name)

    def load_weights(self, name_or_path) -> None:
        state = convert_state_dict(weights_lib.load_state_dict(name_or_path))
        load_state_strict(self, state, name_or_path, "LightGlue")

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """Deep-supervised balanced NLL + early-exit confidence BCE, per pair (B,).

        Every layer's descriptors (`ref_descriptors0/1`, training mode only) are scored by that
        layer's assignment head; the NLLs are combined with `loss.gamma`; the token-confidence BCE of
        the n−1 heads is added in training mode. In eval mode only the output is scored.
        """
        if "zs_num_labels" in data:
            return self.zero_shot_loss(pred, data)
        lc = self.conf.loss
        final = pred["log_assignment"]
        layers = []
        if "ref_descriptors0" in pred:
            d0, d1 = pred["ref_descriptors0"], pred["ref_descriptors1"]
            n = d0.shape[1]
            layers = [self.log_assignment[i](d0[:, i], d1[:, i])[0] for i in range(n - 1)]
        total, losses = deep_supervision_loss(
            layers + [final], data, float(lc.gamma), float(lc.nll_balancing)
        )
        if layers and self.training and lc.confidence_weight > 0:
            heads = self.token_confidence
            logits0 = [heads[i].logits(d0[:, i]) for i in range(n - 1)]
            logits1 = [heads[i].logits(d1[:, i]) for i in range(n - 1)]
            closs = confidence_loss(logits0, logits1, layers, final.detach())
            losses["confidence"] = closs.detach()
            total = total + float(lc.confidence_weight) * closs
        losses["total"] = total
        return losses, matcher_metrics(pred, data)

    def zero_shot_loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """GIM-LightGlue's loss on video labels (`train-gim-glue`): keypoint i of image 0 and
        keypoint i of image 1 are the i-th label for i < K (`zs_num_labels`, (B,)); the loss of a
        pair is −mean(diag(log_assignment[:K, :K])), positives only (nothing is known about the
        other points). Metric `label_recall`: the fraction of the K labels matched to their partner.
        """
        la = pred["log_assignment"]
        k = torch.as_tensor(data["zs_num_labels"], device=la.device).reshape(-1)
        n = min(la.shape[1], la.shape[2]) - 1
        idx = torch.arange(n, device=la.device)
        diag = la[:, idx, idx]  # (B, n)
        valid = idx[None] < k[:, None]
        nll = -(diag * valid).sum(1) / valid.sum(1).clamp(min=1)
        hit = (pred["matches0"][:, :n] == idx[None]) & valid
        recall = hit.sum(1).float() / valid.sum(1).clamp(min=1)
        return {"total": nll, "zs_nll": nll.detach()}, {"label_recall": recall}

    def confidence_threshold(self, layer_index: int) -> float:
        threshold = 0.8 + 0.1 * math.exp(-4.0 * layer_index / self.conf.n_layers)
        return min(max(threshold, 0.0), 1.0)

    def _encode_positions(self, data: dict, i: str, size) -> torch.Tensor:
        kpts = normalize_keypoints(data[f"keypoints{i}"], size)
        if self.conf.add_scale_ori:
            kpts = torch.cat(
                [kpts, data[f"scales{i}"].unsqueeze(-1), data[f"oris{i}"].unsqueeze(-1)], -1
            )
        return self.posenc(kpts)

    def _forward(self, data: dict) -> dict:
        # the masked path is asked for explicitly: the training pipeline's batches carry
        # `mask0/1` too, but its loss needs the full log-assignment of the plain path
        if data.get("padded_batch"):
            return self._forward_padded(data)
        kpts0, kpts1 = data["keypoints0"], data["keypoints1"]
        b, m, _ = kpts0.shape
        n = kpts1.shape[1]
        device = kpts0.device
        if m == 0 or n == 0:
            return self._empty(b, m, n, device)
        desc0 = self.input_proj(data["descriptors0"].detach().float())
        desc1 = self.input_proj(data["descriptors1"].detach().float())
        encoding0 = self._encode_positions(data, "0", data.get("image_size0"))
        encoding1 = self._encode_positions(data, "1", data.get("image_size1"))

        training = self.training
        # adaptivity is defined per pair: only without batching and never while training
        do_early_stop = self.conf.depth_confidence > 0 and not training and b == 1
        do_prune = self.conf.width_confidence > 0 and not training and b == 1
        ind0 = torch.arange(m, device=device)[None]
        ind1 = torch.arange(n, device=device)[None]
        prune0 = torch.ones((b, m), dtype=torch.long, device=device)
        prune1 = torch.ones((b, n), dtype=torch.long, device=device)
        all_desc0, all_desc1 = [], []
        token0 = token1 = None
        for i in range(self.conf.n_layers):
            desc0, desc1 = self.transformers[i](desc0, desc1, encoding0, encoding1)
            if training:
                all_desc0.append(desc0)
                all_desc1.append(desc1)
            if i == self.conf.n_layers - 1:
                continue
            if do_early_stop:
                token0, token1 = self.token_confidence[i](desc0, desc1)
                if self._check_if_stop(token0, token1, i, m + n):
                    break
            if do_prune:
                desc0, encoding0, ind0 = self._prune(i, desc0, encoding0, ind0, prune0, token0)
                desc1, encoding1, ind1 = self._prune(i, desc1, encoding1, ind1, prune1, token1)
                if desc0.shape[1] == 0 or desc1.shape[1] == 0:
                    return self._empty(b, m, n, device, stop=i + 1)

        scores, _ = self.log_assignment[i](desc0, desc1)
        m0, m1, mscores0, mscores1 = filter_matches(scores, self.conf.filter_threshold)
        if do_prune:  # map indices of the surviving points back to the input sets
            m0_ = torch.full((b, m), -1, device=device, dtype=m0.dtype)
            m1_ = torch.full((b, n), -1, device=device, dtype=m1.dtype)
            m0_[:, ind0] = torch.where(m0 == -1, -1, ind1.gather(1, m0.clamp(min=0)))
            m1_[:, ind1] = torch.where(m1 == -1, -1, ind0.gather(1, m1.clamp(min=0)))
            ms0 = torch.zeros((b, m), device=device)
            ms1 = torch.zeros((b, n), device=device)
            ms0[:, ind0], ms1[:, ind1] = mscores0.float(), mscores1.float()  # autocast: bf16
            m0, m1, mscores0, mscores1 = m0_, m1_, ms0, ms1
        pred = {
            "matches0": m0,
            "matches1": m1,
            "matching_scores0": mscores0,
            "matching_scores1": mscores1,
            "stop": i + 1,
            "prune0": prune0,
            "prune1": prune1,
        }
        if not do_prune:
            pred["log_assignment"] = scores
        if training:
            pred["ref_descriptors0"] = torch.stack(all_desc0, 1)
            pred["ref_descriptors1"] = torch.stack(all_desc1, 1)
        return pred

    def _forward_padded(self, data: dict) -> dict:
        """B pairs padded to common lengths, `mask0` (B, M) / `mask1` (B, N) marking the real
        points (`tiepoint.batching.collate_pairs`). Padded points are masked out of every
        attention, so each pair is matched as on its own with adaptivity off (depth and width
        are per-pair decisions, so early stopping and pruning are off here). The assignment head
        runs per pair on its real points; outputs are padded with −1 / 0. Needs `image_size0/1`:
        keypoints are normalised by the image size, never by the (padded) keypoint extent."""
        kpts0, kpts1 = data["keypoints0"], data["keypoints1"]
        b, m, _ = kpts0.shape
        n = kpts1.shape[1]
        device = kpts0.device
        full = lambda length: torch.ones((b, length), dtype=torch.bool, device=device)
        mask0 = data.get("mask0", full(m)).bool()
        mask1 = data.get("mask1", full(n)).bool()
        if "image_size0" not in data or "image_size1" not in data:
            raise ConfigError("a padded LightGlue batch needs image_size0 and image_size1")
        out = self._empty(b, m, n, device, stop=self.conf.n_layers)
        len0, len1 = mask0.sum(1).tolist(), mask1.sum(1).tolist()
        live = [i for i in range(b) if len0[i] > 0 and len1[i] > 0]
        if not live:
            return out
        desc0 = self.input_proj(data["descriptors0"].detach().float())
        desc1 = self.input_proj(data["descriptors1"].detach().float())
        encoding0 = self._encode_positions(data, "0", data["image_size0"])
        encoding1 = self._encode_positions(data, "1", data["image_size1"])
        # a pair without points would leave rows with no key at all (NaN): give it one dummy key
        am0, am1 = mask0.clone(), mask1.clone()
        am0[:, 0] = True
        am1[:, 0] = True
        am0, am1 = am0[:, None, None, :], am1[:, None, None, :]
        for i in range(self.conf.n_layers):
            desc0, desc1 = self.transformers[i](desc0, desc1, encoding0, encoding1, am0, am1)
        head = self.log_assignment[self.conf.n_layers - 1]
        for j in live:
            scores, _ = head(desc0[j : j + 1, : len0[j]], desc1[j : j + 1, : len1[j]])
            m0, m1, s0, s1 = filter_matches(scores, self.conf.filter_threshold)
            out["matches0"][j, : len0[j]] = m0[0]
            out["matches1"][j, : len1[j]] = m1[0]
            out["matching_scores0"][j, : len0[j]] = s0[0]
            out["matching_scores1"][j, : len1[j]] = s1[0]
        return out

    def _empty(self, b, m, n, device, stop=0) -> dict:
        return {
            **no_matches(b, m, n, device),
            "stop": stop,
        }

    def _check_if_stop(
        self, conf0: torch.Tensor, conf1: torch.Tensor, layer_index: int, num_points: int
    ) -> bool:
        """Stop when the fraction of confident points (pruned points count as confident) exceeds α."""
        confidences = torch.cat([conf0, conf1], -1)
        threshold = self.confidence_thresholds[layer_index]
        ratio_confident = 1.0 - (confidences < threshold).float().sum() / num_points
        return bool(ratio_confident > self.conf.depth_confidence)

    def _prune(self, i: int, desc, encoding, ind, prune, token):
        """Drop the points of one image that layer i deems unmatchable (B = 1); `prune` counts, per
        input point, the layers it survived."""
        if desc.shape[1] <= self.conf.pruning_min_keypoints:
            return desc, encoding, ind
        keep = self._pruning_mask(token, self.log_assignment[i].get_matchability(desc), i)
        keep = torch.where(keep[0])[0]
        ind = ind.index_select(1, keep)
        prune[:, ind] += 1
        return desc.index_select(1, keep), encoding.index_select(-2, keep), ind

    def _pruning_mask(
        self, confidences, matchability: torch.Tensor, layer_index: int
    ) -> torch.Tensor:
        """Keep points that may still match; never prune a point whose prediction is still unsure."""
        keep = matchability > (1 - self.conf.width_confidence)
        if confidences is not None:
            keep |= confidences <= self.confidence_thresholds[layer_index]
        return keep
