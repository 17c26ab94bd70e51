"""GlueStick (Pautrat, Suárez, Yu, Pollefeys, Larsson; ICCV 2023): SuperGlue-style matching of
points and line segments together.

Line endpoints are extra graph nodes ("junctions") next to the keypoints. Positions and scores go
through the keypoint MLP; each line endpoint also gets an encoding of (endpoint, offset to the other
endpoint, line score). 18 attentional layers alternate self- and cross-attention over all nodes;
after every self layer a *line layer* sends, along each line, a message MLP(own descriptor, other
endpoint's descriptor, endpoint encoding) to the endpoint's junction (averaged over the lines that
share it). A final projection gives point matching descriptors scored with a dual softmax plus
one learnable dustbin; a second projection of the junction descriptors scores a line pair as the
best of its two endpoint pairings (mean of the two endpoint scores), with its own dustbin.

Inputs (see `required_data_keys` and `_nodes`): either the reference layout — keypoints already
hold the junctions and `lines_junc_idx0/1` (B,L,2) index them — or `line_descriptors0/1`
(B,L,2,D), descriptors of the two endpoints; then the matcher prepends the endpoints as nodes and
the point outputs cover only the given keypoints.

Our implementation; module names follow the official state dict (`checkpoint_GlueStick_MD.tar`,
MIT licence) so it loads strictly. Reused SuperGlue blocks keep the same Conv1d layouts.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from ... import weights as weights_lib
from ...errors import ConfigError, WeightsError
from ..base import FeatureMatcher, load_state_strict, no_matches
from ..losses import matcher_metrics, nll_loss
from .lightglue import filter_matches
from .superglue import AttentionalPropagation, KeypointEncoder, PointwiseMLP, normalize_keypoints
from .superglue import pointwise as _pw

PRESETS = {"md": {"descriptor_dim": 256, "weights": "gluestick_md"}}
EPS = 1e-8


class EndPtEncoder(KeypointEncoder):
    """(endpoint, offset to the other endpoint, line score) → (B,2L,D), endpoints in line order."""

    def __init__(self, dim: int, layers: list[int]):
        super().__init__(dim, layers, in_dim=5)

    def forward(self, lines: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        off = lines[:, :, 1] - lines[:, :, 0]
        off = torch.stack([off, -off], 2).flatten(1, 2)  # (B,2L,2)
        # The official code gives endpoint k the score of line k mod L (`scores.repeat(1, 2)`,
        # tiled, not interleaved); the released weights were trained so, hence kept.
        tiled = scores.repeat(1, 2)[..., None]
        return self.encoder(torch.cat([lines.flatten(1, 2), off, tiled], -1))


class GNNLayer(nn.Module):
    """One self or cross attention layer (the official `gnn.layers.{i}.update` wrapper)."""

    def __init__(self, dim: int, kind: str, heads: int = 4):
        super().__init__()
        self.type = kind
        self.update = AttentionalPropagation(dim, heads)

    def forward(self, desc0, desc1):
        src0, src1 = (desc1, desc0) if self.type == "cross" else (desc0, desc1)
        return desc0 + self.update(desc0, src0), desc1 + self.update(desc1, src1)


class LineLayer(nn.Module):
    """Message passing along lines: each endpoint's junction receives the mean, over the lines that
    end at it, of MLP(junction descriptor, other endpoint's descriptor, endpoint encoding)."""

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = PointwiseMLP([3 * dim, 2 * dim, dim])

    def update(self, desc, enc, junc):
        """desc (B,N,D), enc (B,2L,D), junc (B,2L) node index of each endpoint → (B,N,D)."""
        d = desc.shape[-1]
        idx = junc[..., None].expand(-1, -1, d)
        own = desc.gather(1, idx)  # (B,2L,D)
        other = own.unflatten(1, (-1, 2)).flip(2).flatten(1, 2)
        msg = self.mlp(torch.cat([own, other, enc], -1))
        out = torch.zeros_like(desc).scatter_reduce(1, idx, msg, "mean", include_self=False)
        return desc + out

    def forward(self, desc0, desc1, enc0, enc1, junc0, junc1):
        return self.update(desc0, enc0, junc0), self.update(desc1, enc1, junc1)


class GlueStickGNN(nn.Module):
    def __init__(self, dim: int, layer_names: list[str], num_line_iterations: int = 1):
        super().__init__()
        bad = sorted(set(layer_names) - {"self", "cross"})
        if bad:
            raise ConfigError(f"GlueStick gnn_layers may only hold 'self' and 'cross', got {bad}")
        self.layers = nn.ModuleList([GNNLayer(dim, t) for t in layer_names])
        self.line_layers = nn.ModuleList([LineLayer(dim) for _ in range(len(layer_names) // 2)])
        self.num_line_iterations = num_line_iterations

    def forward(self, desc0, desc1, enc0, enc1, junc0, junc1, checkpointed=False, keep=()):
        """Also returns {i: (desc0, desc1)} after the cross layer of block i for i in `keep`."""
        inter = {}
        run = (lambda f, *a: checkpoint(f, *a, use_reentrant=False)) if checkpointed else None
        has_lines = junc0.shape[1] > 0 and junc1.shape[1] > 0
        for i, layer in enumerate(self.layers):
            desc0, desc1 = run(layer, desc0, desc1) if run else layer(desc0, desc1)
            if layer.type == "self" and has_lines:
                ll = self.line_layers[i // 2]
                for _ in range(self.num_line_iterations):
                    args = (desc0, desc1, enc0, enc1, junc0, junc1)
                    desc0, desc1 = run(ll, *args) if run else ll(*args)
            if layer.type == "cross" and i // 2 in keep:
                inter[i // 2] = (desc0, desc1)
        return desc0, desc1, inter


def log_double_softmax(scores: torch.Tensor, bin_score: torch.Tensor) -> torch.Tensor:
    """(B,M,N) scores + a dustbin score → (B,M+1,N+1): the mean of the row and column
    log-softmaxes (each over the scores plus the dustbin) for real pairs; the dustbin column holds
    the row softmax's dustbin entry, the dustbin row the column softmax's."""
    b, m, n = scores.shape
    bin_ = bin_score.to(scores)
    s0 = torch.cat([scores, bin_.expand(b, m, 1)], 2).log_softmax(2)
    s1 = torch.cat([scores, bin_.expand(b, 1, n)], 1).log_softmax(1)
    out = scores.new_zeros(b, m + 1, n + 1)
    out[:, :m, :n] = (s0[:, :, :n] + s1[:, :m, :]) / 2
    out[:, :m, n] = s0[:, :, n]
    out[:, m, :n] = s1[:, m, :]
    return out


def line_scores_from_junctions(sim: torch.Tensor, junc0: torch.Tensor, junc1: torch.Tensor):
    """(B,N0,N1) node similarities → (B,L0,L1): ½·max(s(a0,a1)+s(b0,b1), s(a0,b1)+s(b0,a1))."""
    s = sim.gather(2, junc1[:, None].expand(-1, sim.shape[1], -1))
    s = s.gather(1, junc0[..., None].expand(-1, -1, s.shape[2]))
    s = s.unflatten(2, (-1, 2)).unflatten(1, (-1, 2))  # (B,L0,2,L1,2)
    straight = s[:, :, 0, :, 0] + s[:, :, 1, :, 1]
    crossed = s[:, :, 0, :, 1] + s[:, :, 1, :, 0]
    return 0.5 * torch.maximum(straight, crossed)


def convert_state_dict(state: dict) -> dict:
    """The official `.tar` (`{"model": {"matcher.…"}}`, possibly `module.`-prefixed from
    DataParallel) or tiepoint training checkpoints → the matcher's own keys."""
    if "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if any("matcher." in k for k in state):
        state = {k.split("matcher.", 1)[1]: v for k, v in state.items() if "matcher." in k}
    return {k.removeprefix("module."): v for k, v in state.items()}


class GlueStick(FeatureMatcher):
    feature_presets = PRESETS
    preset_key = "preset"
    matches_lines = True  # homography benchmarks fit with the `point_line` estimator
    default_conf = {
        "preset": None,  # md: the official MegaDepth model
        "descriptor_dim": 256,  # must equal the extractor's descriptor size
        "keypoint_encoder": [32, 64, 128, 256],
        "gnn_layers": ["self", "cross"] * 9,
        "num_line_iterations": 1,
        "filter_threshold": 0.2,  # points and lines
        "weights": None,  # registered name or path; None with `preset` → the official weights
        "pretrained": True,
        # pipelines without official weights (e.g. 128-D ALIKED): refuse to run randomly
        # initialised; `weights=` / `--weights` (which turns `pretrained` off) satisfies it
        "require_weights": False,
        "checkpointed": False,
        # training: blocks whose line descriptors are also supervised (Glue Factory: [2, 5]),
        # each through its own projection `inter_line_proj.{k}`
        "inter_supervision": None,
        "loss": {"nll_balancing": 0.5, "line_weight": 1.0, "inter_supervision": [0.3, 0.6]},
    }
    required_data_keys = [
        "keypoints0",
        "keypoints1",
        "descriptors0",
        "descriptors1",
        "lines0",
        "lines1",
    ]

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        names = super().weight_names(conf)
        conf = cls.build_conf(conf)
        if not names and conf.require_weights and conf.pretrained:
            raise ConfigError(
                f"GlueStick with descriptor_dim={conf.descriptor_dim} has no official weights: "
                "pass --weights / weights= (a trained checkpoint)"
            )
        return names

    def _init(self, conf):
        d = conf.descriptor_dim
        if d % 4:
            raise ConfigError(f"GlueStick descriptor_dim {d} is not divisible by 4 heads")
        self.kenc = KeypointEncoder(d, list(conf.keypoint_encoder))
        self.lenc = EndPtEncoder(d, list(conf.keypoint_encoder))
        self.gnn = GlueStickGNN(d, list(conf.gnn_layers), int(conf.num_line_iterations))
        self.final_proj = nn.Conv1d(d, d, kernel_size=1)
        self.final_line_proj = nn.Conv1d(d, d, kernel_size=1)
        for proj in (self.final_proj, self.final_line_proj):
            nn.init.constant_(proj.bias, 0.0)
            nn.init.orthogonal_(proj.weight, gain=1)
        inter = list(conf.inter_supervision or [])
        if len(inter) > len(conf.loss.inter_supervision):
            raise ConfigError("GlueStick: loss.inter_supervision needs one weight per block")
        self.inter_line_proj = nn.ModuleList([nn.Conv1d(d, d, kernel_size=1) for _ in inter])
        for proj in self.inter_line_proj:
            nn.init.constant_(proj.bias, 0.0)
            nn.init.orthogonal_(proj.weight, gain=1)
        self.register_parameter("bin_score", nn.Parameter(torch.tensor(1.0)))
        self.register_parameter("line_bin_score", nn.Parameter(torch.tensor(1.0)))
        for name in self.weight_names(conf):
            self.load_weights(name)

    def load_weights(self, name_or_path) -> None:
        """Strictly load the official file or a training checkpoint (a wrong key or descriptor
        size is one WeightsError line naming it)."""
        state = convert_state_dict(weights_lib.load_state_dict(name_or_path))
        self.weights_source = str(name_or_path)  # named by the descriptor-size error in _forward
        d = self.conf.descriptor_dim
        proj = state.get("final_proj.weight")
        if proj is not None and proj.shape[0] != d:
            raise WeightsError(
                f"{name_or_path}: final_proj.weight is for {proj.shape[0]}-d descriptors, but this "
                f"GlueStick has descriptor_dim={d}"
            )
        for k, v in self.state_dict().items():
            # BatchNorm counters of old files; training-only intermediate heads keep their init
            fill = k.endswith("num_batches_tracked") or k.startswith("inter_line_proj.")
            if fill and k not in state:
                state[k] = v.clone()  # the model's own value (counter, or fresh init)
        load_state_strict(self, state, name_or_path, "GlueStick")

    def _nodes(self, data: dict, i: str):
        """Graph nodes of image i: (keypoints, scores, descriptors, junction index (B,2L), number
        of prepended endpoint nodes)."""
        dt = self.bin_score.dtype  # float32 unless the model was cast
        kp, desc = data[f"keypoints{i}"].to(dt), data[f"descriptors{i}"].to(dt)
        b, n = kp.shape[:2]
        score = data.get(f"keypoint_scores{i}")
        score = kp.new_zeros(b, n) if score is None else score.to(dt)
        lines = data[f"lines{i}"]
        nl = lines.shape[1]
        if f"lines_junc_idx{i}" in data:  # the reference layout: junctions among the keypoints
            junc = data[f"lines_junc_idx{i}"].long().flatten(1)
            if nl and (junc.min() < 0 or junc.max() >= n):
                raise ConfigError(f"GlueStick: lines_junc_idx{i} points outside keypoints{i}")
            return kp, score, desc, junc, 0
        ldesc = data.get(f"line_descriptors{i}")
        if ldesc is None:
            raise ConfigError(
                f"GlueStick needs lines_junc_idx{i} (endpoints among the keypoints) or "
                f"line_descriptors{i} (B,L,2,D) for lines{i}"
            )
        lscore = data.get(f"line_scores{i}")
        lscore = kp.new_zeros(b, nl) if lscore is None else lscore.to(dt)
        kp = torch.cat([lines.to(dt).flatten(1, 2), kp], 1)
        score = torch.cat([lscore.repeat_interleave(2, 1), score], 1)
        desc = torch.cat([ldesc.to(dt).flatten(1, 2), desc], 1)
        junc = torch.arange(2 * nl, device=kp.device)[None].expand(b, -1)
        return kp, score, desc, junc, 2 * nl

    def _forward(self, data: dict) -> dict:
        d = self.conf.descriptor_dim
        for i in "01":
            got = data[f"descriptors{i}"].shape[-1]
            if got != d:
                src = getattr(self, "weights_source", None)
                if src is not None:  # e.g. a checkpoint trained on another extractor
                    raise WeightsError(
                        f"{src}: GlueStick weights for {d}-d descriptors, but the extractor "
                        f"gives {got}-d descriptors{i}"
                    )
                raise ConfigError(
                    f"GlueStick with descriptor_dim={d} got descriptors{i} of size {got}"
                )
        kp0, sc0, desc0, junc0, off0 = self._nodes(data, "0")
        kp1, sc1, desc1, junc1, off1 = self._nodes(data, "1")
        b, nl0, nl1 = kp0.shape[0], data["lines0"].shape[1], data["lines1"].shape[1]
        if kp0.shape[1] == 0 or kp1.shape[1] == 0:
            return self._empty(b, kp0.shape[1] - off0, kp1.shape[1] - off1, nl0, nl1, kp0.device)
        size0, size1 = data.get("image_size0"), data.get("image_size1")
        if size0 is None or size1 is None:  # the lines' extent counts for the fallback size
            size0 = size0 if size0 is not None else _extent(kp0, data["lines0"])
            size1 = size1 if size1 is not None else _extent(kp1, data["lines1"])
        desc0 = desc0.detach() + self.kenc(normalize_keypoints(kp0, size0), sc0)
        desc1 = desc1.detach() + self.kenc(normalize_keypoints(kp1, size1), sc1)
        enc0 = enc1 = None
        if nl0 and nl1:
            dt = kp0.dtype
            enc0 = self.lenc(_norm_lines(data["lines0"].to(dt), size0), _lscore(data, "0", dt))
            enc1 = self.lenc(_norm_lines(data["lines1"].to(dt), size1), _lscore(data, "1", dt))
        else:
            junc0, junc1 = junc0[:, :0], junc1[:, :0]
        inter_blocks = list(self.conf.inter_supervision or []) if self.training else []
        desc0, desc1, inter = self.gnn(
            desc0,
            desc1,
            enc0,
            enc1,
            junc0,
            junc1,
            self.conf.checkpointed and self.training,
            inter_blocks,
        )
        m0 = _pw(self.final_proj, desc0)
        m1 = _pw(self.final_proj, desc1)
        la = log_double_softmax(m0 @ m1.transpose(1, 2) / d**0.5, self.bin_score)
        if off0 or off1:  # prepended endpoint nodes: the point outputs cover the keypoints only
            la = la[:, off0:, off1:]
        pred = no_matches(b, la.shape[1] - 1, la.shape[2] - 1, kp0.device)
        pred["log_assignment"] = la
        if la.shape[1] > 1 and la.shape[2] > 1:  # else: only line endpoints in one image
            keys = ("matches0", "matches1", "matching_scores0", "matching_scores1")
            pred.update(zip(keys, filter_matches(la, self.conf.filter_threshold)))
        if nl0 and nl1:
            lla = self._line_assignment(self.final_line_proj, desc0, desc1, junc0, junc1)
            for k, blk in enumerate(inter_blocks):
                if blk in inter:
                    pred[f"line_{blk}_log_assignment"] = self._line_assignment(
                        self.inter_line_proj[k], *inter[blk], junc0, junc1
                    )
            lm0, lm1, ls0, ls1 = filter_matches(lla, self.conf.filter_threshold)
            lm0, lm1, ls0, ls1 = _drop_padding(data, lm0, lm1, ls0, ls1)
            pred.update(
                line_matches0=lm0,
                line_matches1=lm1,
                line_matching_scores0=ls0,
                line_matching_scores1=ls1,
            )
        else:
            lla = kp0.new_zeros(b, nl0 + 1, nl1 + 1)
            pred.update(no_matches(b, nl0, nl1, kp0.device, prefix="line_"))
        pred["line_log_assignment"] = lla
        return pred

    def _line_assignment(self, proj, desc0, desc1, junc0, junc1) -> torch.Tensor:
        l0, l1 = _pw(proj, desc0), _pw(proj, desc1)
        sim = l0 @ l1.transpose(1, 2) / self.conf.descriptor_dim**0.5
        return log_double_softmax(
            line_scores_from_junctions(sim, junc0, junc1), self.line_bin_score
        )

    def _empty(self, b, m, n, nl0, nl1, device) -> dict:
        return {
            **no_matches(b, m, n, device),
            "log_assignment": torch.zeros((b, m + 1, n + 1), device=device),
            **no_matches(b, nl0, nl1, device, prefix="line_"),
            "line_log_assignment": torch.zeros((b, nl0 + 1, nl1 + 1), device=device),
        }

    def loss(self, pred: dict, data: dict) -> tuple[dict, dict]:
        """Balanced NLL per pair (B,) of the point GT plus `loss.line_weight` × that of the line GT
        (`gt_line_matches0/1`; −1 unmatched, −2 ignored). Pairs without lines have no line term."""
        bal = float(self.conf.loss.nll_balancing)
        gt_a = data.get("gt_assignment")
        if gt_a is None:
            gt_a = assignment_from_matches(data["gt_matches0"], data["gt_matches1"].shape[1])
        nll, parts = nll_loss(
            pred["log_assignment"], gt_a, data["gt_matches0"], data["gt_matches1"], bal
        )
        losses = {"total": nll, **{k: v.detach() for k, v in parts.items()}}
        if "gt_line_matches0" in data:
            g0, g1 = data["gt_line_matches0"], data["gt_line_matches1"]
            lnll, lparts = nll_loss(
                pred["line_log_assignment"],
                assignment_from_matches(g0, g1.shape[1]),
                g0,
                g1,
                bal,
            )
            total = nll + float(self.conf.loss.line_weight) * lnll
            gt_la = assignment_from_matches(g0, g1.shape[1])
            weights = self.conf.loss.inter_supervision
            for k, blk in enumerate(self.conf.inter_supervision or []):
                if f"line_{blk}_log_assignment" in pred:
                    inll, _ = nll_loss(pred[f"line_{blk}_log_assignment"], gt_la, g0, g1, bal)
                    total = total + float(weights[k]) * inll
                    losses[f"line_{blk}_nll"] = inll.detach()
            losses["total"] = total
            losses["line_nll"] = lnll.detach()
            losses.update({f"line_{k}": v.detach() for k, v in lparts.items()})
        metrics = matcher_metrics(pred, data)
        metrics["top1"] = top1_accuracy(pred["log_assignment"], data["gt_matches0"])
        if "gt_line_matches0" in data and data["gt_line_matches0"].shape[1]:
            metrics["line_top1"] = top1_accuracy(
                pred["line_log_assignment"], data["gt_line_matches0"]
            )
            lm = matcher_metrics(
                {
                    "matches0": pred["line_matches0"],
                    "matching_scores0": pred["line_matching_scores0"],
                },
                {"gt_matches0": data["gt_line_matches0"]},
            )
            metrics.update({f"line_{k}": v for k, v in lm.items()})
        return losses, metrics


def top1_accuracy(log_assignment: torch.Tensor, gt0: torch.Tensor) -> torch.Tensor:
    """Per pair (B,): the share of ground-truth matched rows whose best column (dustbin aside) is
    the right one — threshold-free, so it shows learning before any score passes the filter."""
    pos = gt0 >= 0
    if log_assignment.shape[2] < 2:
        return torch.full(pos.shape[:1], float("nan"), device=gt0.device)
    best = log_assignment[:, :-1, :-1].argmax(-1)
    n = pos.sum(-1)
    hit = ((best == gt0) & pos).sum(-1).float()
    return torch.where(n > 0, hit / n.clamp(min=1), torch.full_like(hit, float("nan")))


def assignment_from_matches(m0: torch.Tensor, n: int) -> torch.Tensor:
    """(B,M) match indices (−1/−2 none) → (B,M,N) boolean positives."""
    idx = torch.arange(n, device=m0.device)
    return m0[..., None] == idx


def _drop_padding(data, m0, m1, s0, s1):
    """Padding lines (`valid_lines{i}` False, from batching) and degenerate (zero-length) lines,
    which have no direction to match, neither match nor are matched."""
    v0, v1 = (_usable_lines(data, i) for i in "01")
    keep0 = v0 & (m0 >= 0) & v1.gather(1, m0.clamp(min=0))
    keep1 = v1 & (m1 >= 0) & v0.gather(1, m1.clamp(min=0))
    return (
        torch.where(keep0, m0, -1),
        torch.where(keep1, m1, -1),
        torch.where(keep0, s0, 0.0),
        torch.where(keep1, s1, 0.0),
    )


def _usable_lines(data, i) -> torch.Tensor:
    lines = data[f"lines{i}"]
    ok = (lines[:, :, 1] - lines[:, :, 0]).abs().amax(-1) > 0
    valid = data.get(f"valid_lines{i}")
    return ok if valid is None else ok & valid.bool()


def _lscore(data, i, dt):
    s = data.get(f"line_scores{i}")
    lines = data[f"lines{i}"]
    return lines.new_zeros(lines.shape[:2], dtype=dt) if s is None else s.to(dt)


def _norm_lines(lines: torch.Tensor, size) -> torch.Tensor:
    return normalize_keypoints(lines.flatten(1, 2), size).unflatten(1, (-1, 2))


def _extent(kp: torch.Tensor, lines: torch.Tensor) -> torch.Tensor:
    pts = torch.cat([kp, lines.to(kp.dtype).flatten(1, 2)], 1)
    return 1 + pts.max(-2).values - pts.min(-2).values
