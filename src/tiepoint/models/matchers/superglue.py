"""SuperGlue (Sarlin, DeTone, Malisiewicz, Rabinovich, CVPR 2020): a graph neural network that
matches two sets of local features through optimal transport.

Keypoint positions (normalised by 0.7 × the long image side) and detection scores go through an
MLP and are added to the descriptors; 18 attentional layers alternate self- and cross-attention
(4 heads, residual MLP updates); a final projection gives matching descriptors whose scaled dot
products, bordered by one learnable dustbin score, are normalised by log-space Sinkhorn iterations
into a (M+1)×(N+1) log-assignment. Matches are mutual argmaxes whose probability exceeds
`filter_threshold`.

Our implementation; module names and tensor layouts (Conv1d, head-interleaved channels) follow the
official Magic Leap state dicts so `superglue_indoor.pth` / `superglue_outdoor.pth` load strictly.
Those weights (and the official code) are under Magic Leap's licence: academic / non-profit,
non-commercial research use only; they are not bundled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ... import weights as weights_lib
from ...errors import ConfigError, WeightsError
from ..base import FeatureMatcher, load_state_strict, no_matches
from ..losses import matcher_metrics, nll_loss
from .lightglue import filter_matches

# The two official models differ only in their training data (ScanNet vs MegaDepth).
PRESETS = {
    "indoor": {"descriptor_dim": 256, "weights": "superglue_indoor"},
    "outdoor": {"descriptor_dim": 256, "weights": "superglue_outdoor"},
}


def pointwise(conv: nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """A kernel-1 Conv1d applied to (B,N,C) points as a matrix product (several times faster on
    CPU than the convolution, forward and backward); the Conv1d keeps the official key layout."""
    return F.linear(x, conv.weight[..., 0], conv.bias)


class PointwiseMLP(nn.Sequential):
    """Conv1d (kernel 1) layers with BatchNorm + ReLU between them (none after the last), run on
    (B,N,C) points; indices of the layers are those of the official files."""

    def __init__(self, channels: list[int], batch_norm: bool = True):
        layers: list[nn.Module] = []
        for i in range(1, len(channels)):
            layers.append(nn.Conv1d(channels[i - 1], channels[i], kernel_size=1, bias=True))
            if i < len(channels) - 1:
                if batch_norm:
                    layers.append(nn.BatchNorm1d(channels[i]))
                layers.append(nn.ReLU())
        super().__init__(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self:
            if isinstance(layer, nn.Conv1d):
                x = pointwise(layer, x)
            elif isinstance(layer, nn.BatchNorm1d):  # statistics over all B·N points per channel
                x = layer(x.reshape(-1, x.shape[-1])).view_as(x)
            else:
                x = layer(x)
        return x


def normalize_keypoints(kpts: torch.Tensor, size: torch.Tensor | None) -> torch.Tensor:
    """(B,N,2) pixels → centred at the image centre, divided by 0.7 × the long side (W,H size)."""
    if size is None:  # no image size: the keypoints' own extent stands in for it
        size = 1 + kpts.max(-2).values - kpts.min(-2).values
    size = size.to(kpts).expand(kpts.shape[0], 2)
    return (kpts - size[:, None] / 2) / (0.7 * size.max(-1).values)[:, None, None]


class KeypointEncoder(nn.Module):
    """(x, y, score) → a descriptor-sized vector added to the descriptor."""

    def __init__(self, dim: int, layers: list[int], in_dim: int = 3):
        super().__init__()
        self.encoder = PointwiseMLP([in_dim, *layers, dim])
        nn.init.constant_(self.encoder[-1].bias, 0.0)

    def forward(self, kpts: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        return self.encoder(torch.cat([kpts, scores.unsqueeze(-1)], -1))


class MultiHeadedAttention(nn.Module):
    """Conv1d projections; channel c belongs to head c mod H (the official interleaved layout)."""

    def __init__(self, heads: int, dim: int):
        super().__init__()
        if dim % heads:
            raise ConfigError(f"SuperGlue descriptor_dim {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.merge = nn.Conv1d(dim, dim, kernel_size=1)
        self.proj = nn.ModuleList([nn.Conv1d(dim, dim, kernel_size=1) for _ in range(3)])

    def forward(self, query, key, value) -> torch.Tensor:
        """(B,N,D) inputs → (B,N,D) message. The projection rows are regrouped head-major
        ((H, D/H) instead of the stored (D/H, H)), so each head's q/k/v is contiguous in its last
        dimension and scaled_dot_product_attention can use its fused kernel (≈3× faster on CPU
        than on the strided view)."""
        h = self.heads

        def split(conv, x):  # (B,N,D) → (B,H,N,D/H)
            w = conv.weight[..., 0].unflatten(0, (-1, h)).transpose(0, 1).flatten(0, 1)
            bias = conv.bias.unflatten(0, (-1, h)).transpose(0, 1).flatten()
            return F.linear(x, w, bias).unflatten(-1, (h, -1)).transpose(1, 2)

        q, k, v = (split(c, x) for c, x in zip(self.proj, (query, key, value)))
        out = F.scaled_dot_product_attention(q, k, v)  # softmax(q·kᵀ/√(D/H))·v, (B,H,N,D/H)
        # back to the stored channel order d·H + h for `merge`
        return pointwise(self.merge, out.permute(0, 2, 3, 1).flatten(2))


class AttentionalPropagation(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.attn = MultiHeadedAttention(heads, dim)
        self.mlp = PointwiseMLP([2 * dim, 2 * dim, dim])
        nn.init.constant_(self.mlp[-1].bias, 0.0)

    def forward(self, x: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
        """The residual update of x from attending to `source` (x itself or the other image)."""
        return self.mlp(torch.cat([x, self.attn(x, source, source)], -1))


class AttentionalGNN(nn.Module):
    def __init__(self, dim: int, layer_names: list[str], heads: int = 4):
        super().__init__()
        bad = sorted(set(layer_names) - {"self", "cross"})
        if bad:
            raise ConfigError(f"SuperGlue gnn_layers may only hold 'self' and 'cross', got {bad}")
        self.names = list(layer_names)
        self.layers = nn.ModuleList([AttentionalPropagation(dim, heads) for _ in self.names])

    def forward(self, desc0, desc1, checkpointed: bool = False):
        for layer, name in zip(self.layers, self.names):
            src0, src1 = (desc1, desc0) if name == "cross" else (desc0, desc1)
            if checkpointed:
                d0 = checkpoint(layer, desc0, src0, use_reentrant=False)
                d1 = checkpoint(layer, desc1, src1, use_reentrant=False)
            else:
                d0, d1 = layer(desc0, src0), layer(desc1, src1)
            desc0, desc1 = desc0 + d0, desc1 + d1
        return desc0, desc1


def log_sinkhorn(
    couplings: torch.Tensor, log_mu: torch.Tensor, log_nu: torch.Tensor, iters: int
) -> torch.Tensor:
    """Log-space Sinkhorn: scale rows and columns of exp(couplings) towards marginals mu, nu."""
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(iters):
        u = log_mu - torch.logsumexp(couplings + v.unsqueeze(1), dim=2)
        v = log_nu - torch.logsumexp(couplings + u.unsqueeze(2), dim=1)
    return couplings + u.unsqueeze(2) + v.unsqueeze(1)


def log_optimal_transport(scores: torch.Tensor, bin_score: torch.Tensor, iters: int):
    """(B,M,N) scores + one dustbin score → (B,M+1,N+1) log-assignment.

    The transport plan has marginals 1 for each of the M (N) points and N (M) for the dustbin row
    (column): every point is assigned once, and the dustbin can absorb all points of the other
    image. Computed on the plan normalised by M+N, then scaled back, so a real row sums to 1 and
    exp(entry) is the probability that a point matches that column (or the dustbin).
    """
    b, m, n = scores.shape
    ms, ns = scores.new_tensor(float(m)), scores.new_tensor(float(n))
    alpha = bin_score.to(scores)
    couplings = torch.cat(
        [
            torch.cat([scores, alpha.expand(b, m, 1)], -1),
            torch.cat([alpha.expand(b, 1, n), alpha.expand(b, 1, 1)], -1),
        ],
        1,
    )
    norm = -(ms + ns).log()
    log_mu = torch.cat([norm.expand(m), ns.log()[None] + norm])[None].expand(b, -1)
    log_nu = torch.cat([norm.expand(n), ms.log()[None] + norm])[None].expand(b, -1)
    return log_sinkhorn(couplings, log_mu, log_nu, iters) - norm


def convert_state_dict(state: dict) -> dict:
    """Official files as they are; tiepoint / Glue Factory training checkpoints (`{"model": ...}`
    with `matcher.`-prefixed keys) reduced to the matcher's own keys."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if any(k.startswith("matcher.") for k in state):
        state = {k[len("matcher.") :]: v for k, v in state.items() if k.startswith("matcher.")}
    return dict(state)


class SuperGlue(FeatureMatcher):
    feature_presets = PRESETS
    preset_key = "preset"
    default_conf = {
        "preset": None,  # indoor | outdoor: the official models (presets below apply first)
        "descriptor_dim": 256,  # must equal the extractor's descriptor size (no input projection)
        "keypoint_encoder": [32, 64, 128, 256],
        "gnn_layers": ["self", "cross"] * 9,
        "num_heads": 4,
        "sinkhorn_iterations": 50,  # as Glue Factory (official code: 100, its demo script: 20)
        "filter_threshold": 0.2,
        "use_scores": True,  # False feeds zeros for the detection scores (extractors without any)
        "weights": None,  # registered name or path; None with `preset` → the official weights
        "pretrained": True,  # load the official weights of `preset` when weights is None
        "checkpointed": False,  # gradient checkpointing of the GNN layers while training
        "loss": {"nll_balancing": 0.5},  # training only
    }
    required_data_keys = ["keypoints0", "keypoints1", "descriptors0", "descriptors1"]

    def _init(self, conf):
        d = conf.descriptor_dim
        self.kenc = KeypointEncoder(d, list(conf.keypoint_encoder))
        self.gnn = AttentionalGNN(d, list(conf.gnn_layers), conf.num_heads)
        self.final_proj = nn.Conv1d(d, d, kernel_size=1, bias=True)
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))
        for name in self.weight_names(conf):
            self.load_weights(name)

    def load_weights(self, name_or_path) -> None:
        """Strictly load an official file or a training checkpoint; the BatchNorm counters
        (`num_batches_tracked`) may be absent, as in files saved by old PyTorch versions."""
        state = convert_state_dict(weights_lib.load_state_dict(name_or_path))
        d = self.conf.descriptor_dim
        proj = state.get("final_proj.weight")
        if proj is not None and proj.shape[0] != d:
            raise WeightsError(
                f"{name_or_path}: final_proj.weight is for {proj.shape[0]}-d descriptors, but this "
                f"SuperGlue has descriptor_dim={d}"
            )
        own = self.state_dict()
        for k, v in own.items():
            if k.endswith("num_batches_tracked") and k not in state:
                state[k] = v.new_zeros(())
        load_state_strict(self, state, name_or_path, "SuperGlue")

    def _forward(self, data: dict) -> dict:
        kpts0, kpts1 = data["keypoints0"], data["keypoints1"]
        b, m, _ = kpts0.shape
        n = kpts1.shape[1]
        if m == 0 or n == 0:
            return self._empty(b, m, n, kpts0.device)
        d = self.conf.descriptor_dim
        for i in "01":
            if data[f"descriptors{i}"].shape[-1] != d:
                raise ConfigError(
                    f"SuperGlue with descriptor_dim={d} got descriptors{i} of size "
                    f"{data[f'descriptors{i}'].shape[-1]}: use a matching extractor or set "
                    "matcher.descriptor_dim"
                )
        scores = []
        for i, k in (("0", kpts0), ("1", kpts1)):
            s = data.get(f"keypoint_scores{i}")
            if not self.conf.use_scores or s is None:
                s = k.new_zeros(k.shape[:2])
            scores.append(s.float())
        kp0 = normalize_keypoints(kpts0.float(), data.get("image_size0"))
        kp1 = normalize_keypoints(kpts1.float(), data.get("image_size1"))
        desc0 = data["descriptors0"].detach().float() + self.kenc(kp0, scores[0])
        desc1 = data["descriptors1"].detach().float() + self.kenc(kp1, scores[1])
        desc0, desc1 = self.gnn(desc0, desc1, self.conf.checkpointed and self.training)
        mdesc0, mdesc1 = pointwise(self.final_proj, desc0), pointwise(self.final_proj, desc1)
        sim = mdesc0 @ mdesc1.transpose(1, 2) / d**0.5
        la = log_optimal_transport(sim, self.bin_score, int(self.conf.sinkhorn_iterations))
        m0, m1, ms0, ms1 = filter_matches(la, self.conf.filter_threshold)
        return {
            "matches0": m0,
            "matches1": m1,
            "matching_scores0": ms0,
            "matching_scores1": ms1,
            "log_assignment": la,
        }

    def _empty(self, b, m, n, device) -> dict:
        return {
            **no_matches(b, m, n, device),
            "log_assignment": torch.zeros((b, m + 1, n + 1), device=device),
        }

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """Balanced NLL of the ground truth under the Sinkhorn log-assignment, per pair (B,):
        matched pairs score their entry, unmatched points their dustbin entry (both directions),
        and ignored points (label −2) nothing. (Glue Factory's SuperGlue returns only a dict
        here, which its trainer cannot use; this returns the (losses, metrics) pair.)"""
        nll, parts = nll_loss(
            pred["log_assignment"],
            data["gt_assignment"],
            data["gt_matches0"],
            data["gt_matches1"],
            float(self.conf.loss.nll_balancing),
        )
        losses = {"total": nll, **{k: v.detach() for k, v in parts.items()}}
        return losses, matcher_metrics(pred, data)
