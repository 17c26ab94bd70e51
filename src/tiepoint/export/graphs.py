"""Export-friendly forms of the extractors and of LightGlue: the same weights and arithmetic as
the torch models, with every data-dependent size replaced by a fixed one.

An extractor graph maps one image (1, C, H, W) (H, W dynamic) to its K best candidates
(K = `max_num_keypoints`, fixed): keypoints (1, K, 2) in input pixels, scores (1, K),
descriptors (1, K, D), and `count` (1,): how many of the K are real detections. The candidates
come sorted exactly as the torch extractor sorts its keypoints, so the first `count` are its
output. The matcher graph is LightGlue at fixed depth and width (no early exit, no pruning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..models.extractors import aliked as aliked_mod
from ..models.extractors import superpoint as superpoint_mod


class ExtractorGraph(nn.Module):
    """An extractor `m` and its fixed candidate count `k` (`max_num_keypoints`, > 0)."""

    stride = 1  # the multiple the caller pads the image to (1: the graph pads it itself)

    def __init__(self, model):
        super().__init__()
        k = model.conf.max_num_keypoints
        if k is None or k <= 0:
            raise ValueError(
                "export needs extractor.max_num_keypoints > 0 (a fixed candidate count)"
            )
        self.m, self.k = model, int(k)


class AlikedGraph(ExtractorGraph):
    """ALIKED: dense maps → DKD at a fixed top-K → SDDH descriptors, as `ALIKED._forward`.
    Input: the RGB image as it is (the graph pads it itself)."""

    def dense(self, image: torch.Tensor):
        m = self.m
        h, w = image.shape[-2:]
        ph, pw = -h % aliked_mod.PAD_TO, -w % aliked_mod.PAD_TO
        pad = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        x = F.pad(image, pad, mode="replicate")
        hp, wp = x.shape[-2:]
        x1 = m.block1(x)
        x2 = m.block2(F.avg_pool2d(x1, 2))
        x3 = m.block3(F.avg_pool2d(x2, 4))
        x4 = m.block4(F.avg_pool2d(x3, 4))
        levels = [F.selu(c(xi)) for c, xi in zip((m.conv2, m.conv3, m.conv4), (x2, x3, x4))]
        w1 = m.conv1.weight.flatten(1)
        w0 = m.score_head[0].weight.flatten(1).split(w1.shape[0], dim=1)
        s = F.conv2d(F.selu(F.conv2d(x1, w1[..., None, None])), w0[0][..., None, None])
        for lvl, wi in zip(levels, w0[1:]):
            s = s + F.interpolate(
                F.conv2d(lvl, wi[..., None, None]),
                size=(hp, wp),
                mode="bilinear",
                align_corners=True,
            )
        s = m.score_head[1:](s)
        scores = torch.sigmoid(s[:, 0, pad[2] : pad[2] + h, pad[0] : pad[0] + w])
        return scores, aliked_mod.DenseMaps(x1, w1, levels, (pad[0], pad[2]), (h, w))

    def detect(self, scores: torch.Tensor):
        m, k = self.m, self.k
        b, h, w = scores.shape
        r = int(m.conf.nms_radius)
        nms = aliked_mod.simple_nms(scores, r)
        ys = torch.arange(h, device=scores.device).view(1, h, 1)
        xs = torch.arange(w, device=scores.device).view(1, 1, w)
        border = (ys < r) | (ys >= h - r) | (xs < r) | (xs >= w - r)
        flat = torch.where(border, -1.0, nms).view(b, -1)
        th = m.conf.detection_threshold
        mean = scores.reshape(b, -1).mean(1, keepdim=True)
        if th is not None and th > 0:
            counts = (flat > th).sum(1)
            counts = torch.where(counts == 0, (flat > mean).sum(1), counts)
        else:
            counts = torch.full((b,), k, device=flat.device)
        top = flat.topk(k, dim=1)
        idx = top.indices
        group = (top.values > 0).long() + (torch.arange(k, device=flat.device) < counts[:, None])
        wt = xs.reshape(-1)[-1:] + 1  # W as a tensor: ONNX has no symbolic scalar operands
        iy = idx.div(wt, rounding_mode="floor")
        ix = idx - iy * wt
        kpts = aliked_mod.soft_argmax_refine(scores, ix, iy, m.window, m.conf.temperature)
        size = torch.stack([torch.tensor(w - 1), torch.tensor(h - 1)]).clamp(min=1)
        grid = 2 * kpts / size.to(kpts) - 1
        kscores = F.grid_sample(
            scores.unsqueeze(1), grid.unsqueeze(1), "bilinear", align_corners=True
        )[:, 0, 0]
        # sort by refined score within each group, groups in rank order: one key does both
        order = (group.to(kscores.dtype) * 4 + kscores).argsort(dim=1, descending=True)
        kpts = kpts.gather(1, order.unsqueeze(-1).expand(-1, -1, 2))
        return kpts, kscores.gather(1, order), counts.clamp(max=k)

    def forward(self, image: torch.Tensor):
        scores, maps = self.dense(image)
        kpts, kscores, count = self.detect(scores)
        return kpts, kscores, self.m.describe(maps, kpts), count


def _top_candidates(score_map: torch.Tensor, valid: torch.Tensor, k: int):
    """The k best valid pixels of (1, H, W): flat indices, scores, x, y and the number of valid."""
    b, h, w = score_map.shape
    flat = torch.where(valid, score_map, float("-inf")).reshape(b, -1)
    top = flat.topk(k, dim=1)
    wt = torch.ones_like(top.indices[:, :1]) * w  # W as a tensor (no symbolic scalar operands)
    iy = top.indices.div(wt, rounding_mode="floor")
    ix = top.indices - iy * wt
    count = valid.reshape(b, -1).sum(1).clamp(max=k)
    return top.indices, top.values, ix, iy, count


def _inside(size: torch.Tensor, h, w, device, lo: int = 0, hi: int = 0) -> torch.Tensor:
    """(1, H, W) mask of the valid part (W, H) = `size` of a padded map, less `lo` pixels at its
    top/left and `hi` at its bottom/right."""
    ys = torch.arange(h, device=device).view(1, h, 1)
    xs = torch.arange(w, device=device).view(1, 1, w)
    vw, vh = size[:, 0].view(-1, 1, 1), size[:, 1].view(-1, 1, 1)
    return (ys >= lo) & (ys < vh - hi) & (xs >= lo) & (xs < vw - hi)


class DiskGraph(ExtractorGraph):
    """DISK: U-Net heat map, strict 5×5 maxima above the threshold, the top K by logit.

    Input: the image zero-padded (bottom/right) to a multiple of `stride`, as `DISK` pads it,
    and `size` (1, 2) int64, the (W, H) of the unpadded image."""

    stride = 16

    def forward(self, image: torch.Tensor, size: torch.Tensor):
        from kornia.geometry.subpix import nms2d

        from ..models.extractors.disk import dense_heat, last_layer_input, sparse_last_layer

        conf = self.m.conf
        # as DISK runs it: the heat channel densely, the descriptor channels at the keypoints only
        x, last = last_layer_input(self.m.net.unet, image)
        heat = dense_heat(x, last)[:, 0]
        h, w = heat.shape[-2:]
        s = conf.nms_window_size
        # strict maxima of the map cropped to the image: kornia's window reaches (s-1)//2 before
        # and s//2 after a pixel, and pixels whose window leaves the crop are never maxima
        valid = nms2d(heat.unsqueeze(1), (s, s), mask_only=True)[:, 0]
        valid = valid & _inside(size, h, w, heat.device, (s - 1) // 2, s // 2)
        thr = conf.detection_threshold
        if thr is not None:
            valid = valid & (heat > thr)
        idx, scores, ix, iy, count = _top_candidates(heat, valid, self.k)
        kpts = torch.stack([ix, iy], -1)  # (1, K, 2) integer pixels; one image per graph call
        d = sparse_last_layer(x[0], last, kpts[0], self.m.descriptor_dim)[None]
        return kpts.float(), scores, F.normalize(d, dim=-1), count


class XFeatGraph(ExtractorGraph):
    """XFeat (input_fit: pad): 5×5 maxima of the heat map, ranked by heat × reliability.

    Input: the image zero-padded to a multiple of 32 and `size` (1, 2) int64 (W, H) of the
    unpadded part; the instance norm is taken over that part, the padding zeroed after it, as
    `XFeat._prepare` does."""

    stride = 32

    def __init__(self, model):
        if model.conf.input_fit != "pad":
            raise ValueError("ONNX export of XFeat supports input_fit: pad only")
        super().__init__(model)

    def forward(self, image: torch.Tensor, size: torch.Tensor):
        conf = self.m.conf
        hp, wp = image.shape[-2:]
        inside = _inside(size, hp, wp, image.device).unsqueeze(1).to(image.dtype)
        x = image.mean(1, keepdim=True)
        n = inside.sum((2, 3), keepdim=True)
        mean = (x * inside).sum((2, 3), keepdim=True) / n
        var = ((x - mean).square() * inside).sum((2, 3), keepdim=True) / n
        x = (x - mean) * torch.rsqrt(var + 1e-5) * inside  # F.instance_norm's eps
        feats, logits, reliability = self.m.net(x)
        feats = F.normalize(feats, dim=1)
        heat = F.pixel_shuffle(logits.softmax(1)[:, :64], 8)  # (1,1,H',W')
        s = conf.nms_window_size
        valid = (heat == F.max_pool2d(heat, s, stride=1, padding=s // 2)) & (
            heat > (conf.detection_threshold or 0.0)
        )
        valid = valid[:, 0] & inside[:, 0].bool()
        # reliability at every pixel centre, as grid_sample(align_corners=False, border) gives it
        rel = F.interpolate(reliability, size=(hp, wp), mode="bilinear", align_corners=False)
        _, scores, ix, iy, count = _top_candidates(heat[:, 0] * rel[:, 0], valid, self.k)
        kpts = torch.stack([ix, iy], -1).float()
        wh = torch.stack([torch.tensor(wp), torch.tensor(hp)]).to(kpts)
        grid = ((kpts + 0.5) * (2.0 / wh) - 1.0)[:, :, None]  # as xfeat.sample_map
        desc = F.grid_sample(
            feats,
            grid,
            mode=conf.descriptor_interpolation,
            padding_mode="border",
            align_corners=False,
        )[..., 0].transpose(1, 2)
        return kpts, scores, F.normalize(desc, dim=-1), count


class SuperPointGraph(ExtractorGraph):
    """SuperPoint: NMS, border removal, threshold, the top K by score.

    Input: the gray image zero-padded to a multiple of 8, `size` (1, 2) int64 of the unpadded."""

    stride = 8

    def forward(self, image: torch.Tensor, size: torch.Tensor):
        conf = self.m.conf
        logits, desc = self.m.net(image)
        scores = F.pixel_shuffle(logits.softmax(1)[:, :64], 8)[:, 0]
        h, w = scores.shape[-2:]
        # the torch model crops before NMS: −1 beyond the crop (scores are ≥ 0) suppresses nothing
        scores = torch.where(_inside(size, h, w, image.device), scores, -1.0)
        scores = superpoint_mod.simple_nms(scores[:, None], conf.nms_radius)[:, 0]
        b = int(conf.remove_borders)
        valid = _inside(size, h, w, image.device, b, b) & (
            scores > (conf.detection_threshold or 0.0)
        )
        _, s, ix, iy, count = _top_candidates(scores, valid, self.k)
        kpts = torch.stack([ix, iy], -1).float()
        d = superpoint_mod.sample_descriptors(F.normalize(desc, dim=1), kpts)
        return kpts, s, F.normalize(d, dim=-1), count


class LightGlueGraph(nn.Module):
    """LightGlue at fixed depth and width: (keypoints, descriptors, image size) ×2 → matches0,
    matching_scores0. The model must be built with depth_confidence = width_confidence = -1."""

    def __init__(self, model):
        super().__init__()
        if model.conf.depth_confidence > 0 or model.conf.width_confidence > 0:
            raise ValueError("export LightGlue with depth_confidence=-1 and width_confidence=-1")
        if model.conf.add_scale_ori:
            raise ValueError("ONNX export of LightGlue with scales/orientations is not supported")
        self.m = model

    def forward(self, kpts0, kpts1, desc0, desc1, size0, size1):
        data = {
            "keypoints0": kpts0,
            "keypoints1": kpts1,
            "descriptors0": desc0,
            "descriptors1": desc1,
            "image_size0": size0,
            "image_size1": size1,
        }
        pred = self.m._forward(data)
        return pred["matches0"], pred["matching_scores0"]


EXTRACTOR_GRAPHS = {
    "aliked": AlikedGraph,
    "disk": DiskGraph,
    "xfeat": XFeatGraph,
    "superpoint": SuperPointGraph,
}
