"""ALIKED: official weights load strictly, the fast path equals the plain dense formulation, DKD on
synthetic score maps, and features are right on a real pair under its ground-truth homography."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from helpers import extract_pair, mutual_nn, read_h, repeatability

from tiepoint.errors import ConfigError, ImageError, WeightsError
from tiepoint.geometry.homography import warp_points
from tiepoint.images import load
from tiepoint.models import get_model
from tiepoint.models.extractors.aliked import ALIKED, CONFIGS

VARIANTS = list(CONFIGS)


@pytest.fixture(scope="module")
def bikes_dir(data_dir) -> Path:
    return data_dir / "homography" / "oxford_bikes"


@pytest.fixture(scope="module")
def weights_ready(official_weights):
    official_weights(*VARIANTS)


@pytest.fixture(scope="module")
def model(weights_ready):
    return ALIKED({"model_name": "aliked-n16"}).eval()


@pytest.fixture(scope="module")
def bikes(model, bikes_dir):
    """Features of bikes img1/img2 at their native 1000×700 (so the GT H applies unchanged)."""
    feats = [{k: v.numpy() for k, v in f.items()} for _, f in extract_pair(model, bikes_dir)]
    return feats, read_h(bikes_dir / "H1to2p")


# ---------------------------------------------------------------------------- weights and config
@pytest.mark.parametrize("name", VARIANTS)
def test_official_state_dicts_load_strictly(weights_ready, name):
    from tiepoint import weights

    state = weights.load_state_dict(name)
    model = ALIKED({"model_name": name})
    own = model.state_dict()
    assert set(own) == set(state), set(own) ^ set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k
    expected_dim = 64 if name == "aliked-t16" else 128
    assert model.descriptor_dim == expected_dim == state["desc_head.agg_weights"].shape[-1]


def test_weights_of_another_variant_are_refused(weights_ready, tmp_path):
    from tiepoint import weights

    with pytest.raises(WeightsError, match=r"do not fit this aliked-t16 \(\d+ shape mismatches"):
        ALIKED({"model_name": "aliked-t16", "weights": str(weights.resolve("aliked-n16"))})
    other = tmp_path / "other.pth"
    torch.save({"conv.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match=r"do not fit this aliked-n16 .*missing keys"):
        ALIKED({"weights": str(other)})
    with pytest.raises(ConfigError, match="aliked-n64"):
        ALIKED({"model_name": "aliked-n64"})


def test_bad_images_raise_one_line_errors(model):
    with pytest.raises(ImageError, match="shape"):
        model({"image": torch.rand(3, 64, 64)})
    with pytest.raises(ImageError, match="shape"):
        model({"image": torch.rand(1, 2, 64, 64)})
    with pytest.raises(ImageError, match="too small"):
        model({"image": torch.rand(1, 3, 5, 64)})


# ---------------------------------------------------------------- fast path == plain formulation
def _plain_dense(m: ALIKED, image: torch.Tensor):
    """The architecture written the straightforward way: unfused BN, full-resolution concat."""

    def cbs(conv, bn, x):
        return F.selu(bn(conv(x)))

    h, w = image.shape[-2:]
    ph, pw = -h % 32, -w % 32
    x = F.pad(image, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), mode="replicate")
    b1, b2, b3, b4 = m.block1, m.block2, m.block3, m.block4
    x1 = cbs(b1.conv2, b1.bn2, cbs(b1.conv1, b1.bn1, x))
    outs = [x1]
    for blk, pool in ((b2, 2), (b3, 4), (b4, 4)):
        xin = F.avg_pool2d(outs[-1], pool)
        y = blk.bn2(blk.conv2(cbs(blk.conv1, blk.bn1, xin)))
        outs.append(F.selu(y + blk.downsample(xin)))
    levels = [F.selu(c(o)) for c, o in zip((m.conv1, m.conv2, m.conv3, m.conv4), outs)]
    size = x.shape[-2:]
    cat = torch.cat(
        [levels[0]]
        + [F.interpolate(v, size=size, mode="bilinear", align_corners=True) for v in levels[1:]],
        1,
    )
    crop = (slice(None), slice(None), slice(ph // 2, ph // 2 + h), slice(pw // 2, pw // 2 + w))
    return torch.sigmoid(m.score_head(cat))[crop][:, 0], F.normalize(cat, dim=1)[crop]


def _plain_descriptors(m: ALIKED, feat: torch.Tensor, kpts: torch.Tensor) -> torch.Tensor:
    """SDDH for one image, keypoint by keypoint, with the modules as convolutions."""
    head = m.desc_head
    h, w = feat.shape[-2:]
    out = []
    for x, y in kpts.tolist():
        x0 = min(max(int(int(x) - 0.5), 0), w - 4)  # K=3 patch at the truncated pixel, kept inside
        y0 = min(max(int(int(y) - 0.5), 0), h - 4)
        patch = feat[:, y0 : y0 + 3, x0 : x0 + 3][None]
        off = head.offset_conv(patch).clamp(-max(h, w) / 4, max(h, w) / 4).view(2, head.n_pos).t()
        pos = torch.tensor([x, y]) + off
        grid = (2 * pos / torch.tensor([w - 1, h - 1]) - 1).view(1, 1, -1, 2)
        samples = F.grid_sample(feat[None], grid, mode="bilinear", align_corners=True)  # 1,C,1,M
        sf = F.selu(head.sf_conv(samples))[0, :, 0]  # C,M
        out.append(F.normalize(torch.einsum("cm,mcd->d", sf, head.agg_weights), dim=0))
    return torch.stack(out)


@pytest.mark.parametrize("name", ["aliked-n16", "aliked-t16", "aliked-n32"])
def test_fast_path_equals_plain_formulation(weights_ready, bikes_dir, name):
    m = ALIKED({"model_name": name, "max_num_keypoints": 64, "detection_threshold": -1}).eval()
    image = load(bikes_dir / "img1.png").tensor[
        :, :, 301:491, 417:667
    ]  # 250×190: padded on both axes
    with torch.inference_mode():
        ref_scores, ref_feat = _plain_dense(m, image)
        scores, maps = m.dense(image)
        pred = m({"image": image})
        kpts = pred["keypoints"][0]
        ref_desc = _plain_descriptors(m, ref_feat[0], kpts)
        h, w = image.shape[-2:]
        grid = (2 * kpts / torch.tensor([w - 1, h - 1]) - 1).view(1, 1, -1, 2)
        ref_kscores = F.grid_sample(ref_scores[:, None], grid, align_corners=True)[0, 0, 0]
        ys, xs = torch.meshgrid(torch.arange(0, h, 3), torch.arange(0, w, 3), indexing="ij")
        feat_at = maps.at(xs[None], ys[None]).permute(0, 2, 1, 3)  # (B, R, C, S) → (B, C, H/3, W/3)
    assert kpts.shape == (64, 2)
    torch.testing.assert_close(scores, ref_scores, atol=2e-5, rtol=0)
    torch.testing.assert_close(feat_at, ref_feat[:, :, ::3, ::3], atol=2e-5, rtol=0)
    torch.testing.assert_close(pred["keypoint_scores"][0], ref_kscores, atol=2e-5, rtol=0)
    torch.testing.assert_close(pred["descriptors"][0], ref_desc, atol=5e-5, rtol=0)
    # with autograd on (a trainable ALIKED) the same descriptors, and gradients reach the head
    with torch.no_grad():
        _, maps = m.dense(image)
    m.desc_head.requires_grad_(True)
    with torch.enable_grad():
        desc = m.describe(maps, kpts.clone()[None])
        desc.square().sum().backward()
    torch.testing.assert_close(desc[0].detach(), ref_desc, atol=5e-5, rtol=0)
    assert m.desc_head.agg_weights.grad.abs().sum() > 0


# ---------------------------------------------------------------------------- DKD on synthetic maps
def _peaks(h, w, centres, sigma=1.2, heights=None):
    ys, xs = torch.meshgrid(
        torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij"
    )
    out = torch.zeros(h, w)
    for i, (cx, cy) in enumerate(centres):
        a = 0.9 if heights is None else heights[i]
        out = torch.maximum(out, a * torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)))
    return out


def test_detect_symmetric_peaks_at_integer_pixels(model):
    centres = [(10, 12), (30, 7), (45, 40), (1, 30)]  # the last one lies in the removed border
    heights = [0.9, 0.8, 0.7, 0.95]
    scores = _peaks(50, 60, centres, heights=heights)[None]
    kpts, kscores = model.detect(scores)
    assert kpts.shape == (1, 3, 2)
    # symmetric peaks → the soft-argmax lands exactly on the centre pixel; sorted by score
    torch.testing.assert_close(
        kpts[0], torch.tensor(centres[:3], dtype=torch.float32), atol=1e-5, rtol=0
    )
    torch.testing.assert_close(kscores[0], torch.tensor(heights[:3]), atol=1e-6, rtol=0)


def test_detect_subpixel_refinement_moves_towards_the_peak(model):
    scores = _peaks(40, 40, [(20.3, 15.0)], sigma=0.8)[None]
    kpts, _ = model.detect(scores)
    x, y = kpts[0, 0].tolist()
    assert 20.0 < x < 20.3 and abs(y - 15.0) < 1e-5


def test_detect_threshold_limit_and_batch_padding(weights_ready):
    m = ALIKED({"max_num_keypoints": 3, "detection_threshold": 0.5})
    many = _peaks(
        40, 40, [(5, 5), (15, 5), (25, 5), (5, 20), (20, 20)], heights=[0.9, 0.8, 0.7, 0.6, 0.55]
    )
    few = _peaks(40, 40, [(10, 10), (30, 30)], heights=[0.9, 0.3])  # only one above the threshold
    kpts, kscores = m.detect(torch.stack([many, few]))
    assert kpts.shape == (2, 3, 2)
    torch.testing.assert_close(kscores[0], torch.tensor([0.9, 0.8, 0.7]), atol=1e-6, rtol=0)
    # the second image is topped up with its next-best NMS maxima below the threshold
    torch.testing.assert_close(kpts[1, 0], torch.tensor([10.0, 10.0]), atol=1e-5, rtol=0)
    at_weak_peak = (kpts[1] - torch.tensor([30.0, 30.0])).norm(dim=-1) < 1e-4
    assert at_weak_peak[1:].sum() == 1 and kscores[1][at_weak_peak].item() == pytest.approx(
        0.3, abs=1e-6
    )
    alone, alone_scores = m.detect(few[None])
    assert alone.shape == (1, 1, 2) and alone_scores[0, 0] == pytest.approx(0.9, abs=1e-6)
    m2 = ALIKED({"max_num_keypoints": 4, "detection_threshold": -1})  # pure top-k
    assert m2.detect(many[None])[0].shape == (1, 4, 2)


def test_detect_ignores_the_padding_of_smaller_images_in_a_batch(weights_ready):
    m = ALIKED({"max_num_keypoints": 4, "detection_threshold": 0.5})
    full = _peaks(40, 60, [(10, 10), (50, 30), (30, 20)], heights=[0.9, 0.95, 0.8])
    small = _peaks(40, 60, [(10, 10), (50, 30), (30, 20)], heights=[0.9, 0.95, 0.8])
    kpts, _ = m.detect(torch.stack([full, small]), valid_size=torch.tensor([[60, 40], [36, 40]]))
    assert kpts.shape == (2, 3, 2)
    assert (kpts[0, :, 0] > 45).any()  # the peak at x=50 is found in the full image
    assert (kpts[1, :, 0] < 36 - 2).all()  # but not in the 36-px-wide one, nor are top-ups


# ---------------------------------------------------------------------------- real images
def test_repeatability_and_matches_under_ground_truth(bikes):
    (f0, f1), H = bikes
    assert f0["keypoints"].shape[1] == 2 and len(f0["keypoints"]) > 1000
    assert f0["descriptors"].shape == (len(f0["keypoints"]), 128)
    np.testing.assert_allclose(np.linalg.norm(f0["descriptors"], axis=1), 1.0, atol=1e-5)
    assert np.all(np.diff(f0["keypoint_scores"]) <= 0) and f0["keypoint_scores"][0] > 0.9
    k0w = warp_points(H, f0["keypoints"])
    rep = repeatability(k0w, f1["keypoints"], (1000, 700))
    assert rep > 0.5, rep

    i0, i1 = mutual_nn(f0["descriptors"], f1["descriptors"])
    err = np.linalg.norm(k0w[i0] - f1["keypoints"][i1], axis=-1)
    assert len(i0) > 500 and (err < 3).mean() > 0.9, (len(i0), (err < 3).mean())


def test_crop_by_whole_cells_shifts_features(model, bikes, bikes_dir):
    """Cropping 32 px off the left/top shifts keypoints by exactly that (up to the coarse levels'
    align_corners resampling), so padding, cropping and feature offsets are handled consistently."""
    (f0, _), _ = bikes
    image = load(bikes_dir / "img1.png").tensor
    with torch.inference_mode():
        pred = model({"image": image[:, :, 32:, 64:]})
    kb = pred["keypoints"][0].numpy() + [64, 32]
    ka = f0["keypoints"]
    interior = (ka[:, 0] > 128) & (ka[:, 1] > 96) & (ka[:, 0] < 1000 - 64) & (ka[:, 1] < 700 - 64)
    d = np.linalg.norm(ka[interior, None] - kb[None], axis=-1)
    close = d.min(1) < 0.1
    assert close.mean() > 0.85, close.mean()
    cos = (
        f0["descriptors"][interior][close] * pred["descriptors"][0].numpy()[d.argmin(1)[close]]
    ).sum(-1)
    assert np.median(cos) > 0.99


def test_batch_equals_single_images_and_gray_input(weights_ready, bikes_dir):
    m = ALIKED({"max_num_keypoints": 256}).eval()
    a = load(bikes_dir / "img1.png", resize=320).tensor
    b = load(bikes_dir / "img3.png", resize=320).tensor
    with torch.inference_mode():
        batch = m({"image": torch.cat([a, b])})
        singles = [m({"image": x}) for x in (a, b)]
        gray = a.mean(1, keepdim=True)
        from_gray = m({"image": gray})
        from_rgb = m({"image": gray.expand(-1, 3, -1, -1)})
    n = max(s["keypoints"].shape[1] for s in singles)
    assert batch["keypoints"].shape == (2, n, 2) and batch["descriptors"].shape == (2, n, 128)
    assert min(s["keypoints"].shape[1] for s in singles) < n <= 256  # one image was topped up
    for i, single in enumerate(singles):
        ni = single["keypoints"].shape[1]
        for k in ("keypoints", "keypoint_scores", "descriptors"):
            torch.testing.assert_close(batch[k][i, :ni], single[k][0], atol=1e-4, rtol=0)
    for k in from_gray:
        torch.testing.assert_close(from_gray[k], from_rgb[k])


def test_registry_builds_aliked(weights_ready):
    m = get_model("extractor", {"name": "aliked", "model_name": "aliked-t16"})
    assert isinstance(m, ALIKED) and m.descriptor_dim == 64 and not m.grayscale
    with torch.inference_mode():
        out = m.eval()({"image": torch.rand(1, 3, 70, 90)})
    assert (
        out["descriptors"].shape[-1] == 64
        and out["keypoints"].shape[:2] == out["keypoint_scores"].shape
    )
