"""DiffGlue (Zhang & Ma, ACM MM 2024): LightGlue with a diffusion prior over the assignment matrix.

The partial assignment (with dustbins) is treated as the data of a Gaussian diffusion
(`diffusion.py`). Each of LightGlue's layers gains an Assignment-Guided Attention block: its
attention weights are the row/column softmax of the *noisy* assignment x_t, so every layer sees a
guess of who matches whom, and a timestep embedding says how much to trust it. The network is
trained to predict the clean assignment x₀ (its last log-assignment head, exponentiated, is x̂₀)
with an MSE next to LightGlue's NLL deep supervision.

At inference the reference makes one network call at t = 0 on clamped Gaussian noise, so matches
depend on the noise: it is drawn from a seeded generator (`seed`) to make results reproducible.
`sampling_steps > 1` runs a real DDIM from t = T−1 down to 0 instead.

Module names follow the official checkpoints (`SP_DiffGlue.tar`, `ALIKED_DiffGlue.tar`), whose
per-layer blocks sit in one-element ModuleLists (`transformers.{i}.adj_attn.0.*`).
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ... import weights as weights_lib
from ...errors import ConfigError, WeightsError
from ..base import FeatureMatcher, no_matches, state_mismatch
from ..losses import confidence_loss, deep_supervision_loss, matcher_metrics
from .diffusion import (
    DiffusionSchedule,
    assignment_to_x0,
    ddim_sample,
    log_assignment_to_x0,
    timestep_embedding,
)
from .lightglue import FEATURES as LIGHTGLUE_FEATURES
from .lightglue import (
    CrossBlock,
    LearnableFourierPositionalEncoding,
    MatchAssignment,
    SelfBlock,
    TokenConfidence,
    _ffn,
    convert_state_dict,
    filter_matches,
    normalize_keypoints,
)

logger = logging.getLogger("tiepoint")

# feature presets (the two of the paper): input dimension as in LightGlue's presets
FEATURES = {
    name: {"input_dim": LIGHTGLUE_FEATURES[name]["input_dim"]} for name in ("superpoint", "aliked")
}


class AssignmentGuidedAttention(nn.Module):
    """One-head attention whose weights are the softmax of a given M×N assignment (no queries/keys):
    rows for image 0 ← image 1, columns for image 1 ← image 0; then value/out projections and the
    LightGlue FFN residual. The reference calls it `AdjBlock`."""

    def __init__(self, dim: int):
        super().__init__()
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.Linear(dim, dim)
        self.ffn = _ffn(dim)

    def forward(self, x0: torch.Tensor, x1: torch.Tensor, assignment: torch.Tensor):
        v0, v1 = self.to_v(x0), self.to_v(x1)
        m0 = assignment.softmax(-1) @ v1  # (B,M,N)·(B,N,d)
        m1 = assignment.softmax(-2).transpose(-1, -2) @ v0  # (B,N,M)·(B,M,d)
        m0, m1 = self.to_out(m0), self.to_out(m1)
        return x0 + self.ffn(torch.cat([x0, m0], -1)), x1 + self.ffn(torch.cat([x1, m1], -1))


class DiffGlueLayer(nn.Module):
    """self-attention → (+ time embedding) assignment-guided attention → Linear(2d→d) of
    [self output, AGA output] (no residual) → cross-attention.

    One-element ModuleLists keep the official key names (`self_attn.0.*`, ...)."""

    def __init__(self, dim: int, heads: int, temb_dim: int):
        super().__init__()
        self.self_attn = nn.ModuleList([SelfBlock(dim, heads)])
        self.embd_layers = nn.ModuleList([nn.Sequential(nn.ReLU(), nn.Linear(temb_dim, dim))])
        self.adj_attn = nn.ModuleList([AssignmentGuidedAttention(dim)])
        self.desc_compact = nn.ModuleList([nn.Sequential(nn.Linear(2 * dim, dim))])
        self.cross_attn = nn.ModuleList([CrossBlock(dim, heads)])

    def forward(self, desc0, desc1, encoding0, encoding1, temb, assignment):
        desc0 = self.self_attn[0](desc0, encoding0)
        desc1 = self.self_attn[0](desc1, encoding1)
        t = self.embd_layers[0](temb).to(desc0.dtype)[:, None]
        adj0, adj1 = self.adj_attn[0](desc0 + t, desc1 + t, assignment)
        desc0 = self.desc_compact[0](torch.cat([desc0, adj0], -1))
        desc1 = self.desc_compact[0](torch.cat([desc1, adj1], -1))
        return self.cross_attn[0](desc0, desc1)

    @torch.no_grad()
    def make_passthrough(self) -> None:
        """Compaction = [I | 0]: the layer then computes exactly LightGlue's self → cross."""
        lin = self.desc_compact[0][0]
        d = lin.out_features
        lin.weight.zero_()
        lin.weight[:, :d] = torch.eye(d)
        lin.bias.zero_()


class DiffGlue(FeatureMatcher):
    uses_ground_truth = True  # training noises the GT assignment: the pipeline passes `gt_*` in
    default_conf = {
        "features": None,  # superpoint | aliked: sets input_dim (presets below apply first)
        "input_dim": 256,
        "descriptor_dim": 256,
        "add_scale_ori": False,
        "n_layers": 9,
        "num_heads": 4,
        "filter_threshold": 0.1,
        "weights": None,  # DiffGlue checkpoint, or LightGlue weights to start from (name or path)
        "scale": 2.0,  # x₀ ∈ {−1, +1}
        "diffusion_steps": 4096,
        "sampling_steps": 1,  # 1 = reference (one call at t=0); k > 1 = DDIM over k timesteps
        "seed": 0,  # seed of the initial noise at inference (per forward call); None = global RNG
        "diffusion_loss_weight": 1000.0,  # 1000 for synthetic homographies, 1 for MegaDepth
        "checkpointed": False,  # gradient checkpointing of the layers while training
        "loss": {"gamma": 1.0, "nll_balancing": 0.5},
    }

    feature_presets = FEATURES

    def _init(self, conf):
        d, h = conf.descriptor_dim, conf.num_heads
        temb_dim = 4 * d
        self.schedule = DiffusionSchedule(conf.diffusion_steps, conf.scale)
        self.time_embed = nn.Sequential(
            nn.Linear(d, temb_dim), nn.ReLU(), nn.Linear(temb_dim, temb_dim)
        )
        self.input_proj = nn.Linear(conf.input_dim, d) if conf.input_dim != d else nn.Identity()
        self.posenc = LearnableFourierPositionalEncoding(2 + 2 * conf.add_scale_ori, d // h)
        self.transformers = nn.ModuleList(
            [DiffGlueLayer(d, h, temb_dim) for _ in range(conf.n_layers)]
        )
        self.log_assignment = nn.ModuleList([MatchAssignment(d) for _ in range(conf.n_layers)])
        # n heads, not n−1 as in LightGlue: the reference supervises every layer's confidence
        self.token_confidence = nn.ModuleList([TokenConfidence(d) for _ in range(conf.n_layers)])
        if conf.weights is not None:
            self.load_weights(conf.weights)

    # ------------------------------------------------------------------ weights
    def load_weights(self, name_or_path) -> None:
        """Load a DiffGlue checkpoint (official Glue Factory `.tar` with `matcher.` keys, or a plain
        state dict), or start from LightGlue weights: every LightGlue tensor is copied, the new
        blocks are set so that the network computes exactly that LightGlue."""
        state = convert_state_dict(weights_lib.load_state_dict(name_or_path))
        own = self.state_dict()
        from_lightglue = not any(".adj_attn." in k for k in state) and any(
            ".self_attn." in k for k in state
        )
        if from_lightglue:
            # LightGlue names its per-layer blocks without the `.0` of DiffGlue's one-element lists
            state = {self._lightglue_key(k): v for k, v in state.items()}
            expected = {k for k in own if self._is_lightglue_key(k)}
            # the last confidence head does not exist in LightGlue (n−1 heads)
            expected -= {
                k for k in own if k.startswith(f"token_confidence.{self.conf.n_layers - 1}.")
            }
        else:
            expected = set(own)
        problem = state_mismatch(own, state, expected)
        if problem:
            kind = (
                "LightGlue weights for this DiffGlue"
                if from_lightglue
                else "weights for this DiffGlue"
            )
            raise WeightsError(f"{name_or_path}: not {kind} ({problem})")
        self.load_state_dict(state, strict=not from_lightglue)
        if from_lightglue:
            for layer in self.transformers:
                layer.make_passthrough()
            logger.info(
                "DiffGlue: LightGlue weights %s loaded with pass-through new blocks (matches as that LightGlue)",
                name_or_path,
            )

    @staticmethod
    def _lightglue_key(k: str) -> str:
        parts = k.split(".")
        if (
            len(parts) > 3
            and parts[0] == "transformers"
            and parts[2] in ("self_attn", "cross_attn")
        ):
            parts.insert(3, "0")
        return ".".join(parts)

    @staticmethod
    def _is_lightglue_key(k: str) -> bool:
        if k.startswith("transformers."):
            return k.split(".")[2] in ("self_attn", "cross_attn")
        return not k.startswith("time_embed.")

    # ------------------------------------------------------------------ network
    def _encode(self, data: dict, i: str) -> tuple[torch.Tensor, torch.Tensor]:
        desc = self.input_proj(data[f"descriptors{i}"].detach().float())
        kpts = normalize_keypoints(data[f"keypoints{i}"].float(), data.get(f"image_size{i}"))
        if self.conf.add_scale_ori:
            kpts = torch.cat(
                [kpts, data[f"scales{i}"][..., None].float(), data[f"oris{i}"][..., None].float()],
                -1,
            )
        return desc, self.posenc(kpts)

    def denoise(
        self, x_t: torch.Tensor, t: torch.Tensor, data: dict, keep_all: bool = False
    ) -> dict:
        """One network call: noisy assignment x_t (B,1,M+1,N+1) at integer timesteps t (B,) →
        `log_assignment` (B,M+1,N+1) of the last head, its x̂₀ `adj_mat`, and (keep_all) the
        descriptors after every layer for deep supervision."""
        desc0, enc0 = self._encode(data, "0")
        desc1, enc1 = self._encode(data, "1")
        temb = self.time_embed(
            timestep_embedding(self.schedule.network_time(t), self.conf.descriptor_dim)
        )
        # back to [0,1]; the dustbins of x_t are not used by the layers, only the M×N block
        assignment = x_t[:, 0, :-1, :-1] / self.conf.scale + 0.5
        all0, all1 = [], []
        for layer in self.transformers:
            if self.conf.checkpointed and self.training:
                desc0, desc1 = checkpoint(
                    layer, desc0, desc1, enc0, enc1, temb, assignment, use_reentrant=False
                )
            else:
                desc0, desc1 = layer(desc0, desc1, enc0, enc1, temb, assignment)
            if keep_all:
                all0.append(desc0)
                all1.append(desc1)
        scores, _ = self.log_assignment[-1](desc0, desc1)
        out = {"log_assignment": scores, "adj_mat": log_assignment_to_x0(scores, self.conf.scale)}
        if keep_all:
            out["ref_descriptors0"] = torch.stack(all0, 1)
            out["ref_descriptors1"] = torch.stack(all1, 1)
        return out

    def _forward(self, data: dict) -> dict:
        kpts0, kpts1 = data["keypoints0"], data["keypoints1"]
        b, m, _ = kpts0.shape
        n = kpts1.shape[1]
        device = kpts0.device
        if m == 0 or n == 0:
            return self._empty(b, m, n, device)
        if self.training:
            missing = [k for k in ("gt_assignment", "gt_matches0", "gt_matches1") if k not in data]
            if missing:
                raise ConfigError(
                    f"DiffGlue needs ground truth {missing} before its forward while training (it noises the GT assignment)"
                )
            x0 = assignment_to_x0(
                data["gt_assignment"], data["gt_matches0"], data["gt_matches1"], self.conf.scale
            )
            t = self.schedule.sample_timesteps(b, device)
            x_t = self.schedule.q_sample(x0, t, torch.randn_like(x0))
            out = self.denoise(x_t, t, data, keep_all=True)
            out.update({"diffusion_x0": x0, "diffusion_t": t})
        else:
            gen = None
            if self.conf.seed is not None:
                gen = torch.Generator().manual_seed(int(self.conf.seed))
            x_T = self.schedule.initial_noise((b, 1, m + 1, n + 1), gen, device)
            _, out = ddim_sample(
                lambda x, t: self._denoise_x0(x, t, data),
                self.schedule,
                x_T,
                self.conf.sampling_steps,
            )
        m0, m1, mscores0, mscores1 = filter_matches(
            out["log_assignment"], self.conf.filter_threshold
        )
        return {
            **out,
            "matches0": m0,
            "matches1": m1,
            "matching_scores0": mscores0,
            "matching_scores1": mscores1,
        }

    def _denoise_x0(self, x_t, t, data):
        out = self.denoise(x_t, t, data)
        return out["adj_mat"], out

    def _empty(self, b, m, n, device) -> dict:
        return no_matches(b, m, n, device)

    # ------------------------------------------------------------------ training
    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """w·MSE(x₀, x̂₀) + NLL deep supervision + token-confidence BCE, per pair (B,).

        As in the reference: the NLL averages the output (weight 1) and *all* n layers (weights
        γ^(n−i)), so the last layer counts twice; the confidence loss covers all n heads. In eval
        mode the total is the output's NLL only and the MSE is reported beside it.
        """
        lc = self.conf.loss
        x0 = pred.get("diffusion_x0")
        if x0 is None:
            x0 = assignment_to_x0(
                data["gt_assignment"], data["gt_matches0"], data["gt_matches1"], self.conf.scale
            )
        mse = ((x0 - pred["adj_mat"]) ** 2).flatten(1).mean(1)
        final = pred["log_assignment"]
        layers = []
        if "ref_descriptors0" in pred:
            d0, d1 = pred["ref_descriptors0"], pred["ref_descriptors1"]
            layers = [self.log_assignment[i](d0[:, i], d1[:, i])[0] for i in range(d0.shape[1])]
        nll, losses = deep_supervision_loss(layers + [final], data, lc.gamma, lc.nll_balancing)
        losses["diffusion_mse"] = mse.detach()
        if layers and self.training:
            heads = self.token_confidence  # n heads: the reference supervises every layer
            logits0 = [heads[i].logits(d0[:, i]) for i in range(len(layers))]
            logits1 = [heads[i].logits(d1[:, i]) for i in range(len(layers))]
            confidence = confidence_loss(logits0, logits1, layers, final.detach())
            losses["confidence"] = confidence.detach()
            nll = nll + confidence
        losses["matcher_total"] = nll.detach()
        losses["total"] = nll + self.conf.diffusion_loss_weight * mse if self.training else nll
        return losses, matcher_metrics(pred, data)
