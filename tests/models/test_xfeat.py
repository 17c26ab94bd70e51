"""XFeat: strict loading of the official xfeat.pt; behaviour on a real pair with a GT homography."""

from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import extract_pair, gt_warp, mutual_nn, read_h, repeatability

from tiepoint import weights
from tiepoint.errors import ConfigError, WeightsError
from tiepoint.images import load
from tiepoint.models import get_model
from tiepoint.models.extractors.xfeat import XFeat, sample_map


@pytest.fixture(scope="module")
def bikes(data_dir) -> Path:
    return data_dir / "homography" / "oxford_bikes"


@pytest.fixture(scope="session")
def xfeat_weights(official_weights) -> Path:
    official_weights("xfeat")
    return weights.cache_path("xfeat")


@pytest.fixture(scope="module")
def model(xfeat_weights) -> XFeat:
    return get_model("extractor", {"name": "xfeat", "max_num_keypoints": 2048})


def gt_scores(pair, H) -> dict:
    """Repeatability (3 px), its chance level, and mutual-NN matches judged by the GT H."""
    (im0, f0), (im1, f1) = pair
    size1 = im1.tensor.shape[-1], im1.tensor.shape[-2]

    def warp(p):
        return gt_warp(p, H, im0.scale, im1.scale)

    k0, k1 = f0["keypoints"].numpy(), f1["keypoints"].numpy()
    rng = np.random.default_rng(0)
    rand = rng.uniform([0, 0], [im0.tensor.shape[-1] - 1, im0.tensor.shape[-2] - 1], size=k0.shape)
    i0, i1 = mutual_nn(f0["descriptors"], f1["descriptors"])
    err = np.linalg.norm(warp(k0[i0]) - k1[i1], axis=1)
    return {
        "rep": repeatability(warp(k0), k1, size1),
        "chance": repeatability(warp(rand), k1, size1),
        "n_mnn": len(i0),
        "prec3": float((err < 3).mean()),
    }


def test_official_weights_load_strictly(model, xfeat_weights):
    state = torch.load(xfeat_weights, map_location="cpu", weights_only=True)
    own = model.net.state_dict()
    assert set(own) == set(state)
    for k, v in state.items():
        assert torch.equal(own[k], v), k


def test_real_pair_under_gt_homography(model, bikes):
    """640×448 (a multiple of 32). Measured: repeatability 0.59 (chance 0.22), MNN prec. 0.81."""
    pair = extract_pair(model, bikes, 640)
    (im0, f0), _ = pair
    n = f0["keypoints"].shape[0]
    assert n == 2048 and f0["descriptors"].shape == (n, 64)
    s = f0["keypoint_scores"]
    assert torch.all(s[:-1] >= s[1:]) and s.min() > 0
    torch.testing.assert_close(f0["descriptors"].norm(dim=-1), torch.ones(n))
    r = gt_scores(pair, read_h(bikes / "H1to2p"))
    assert r["rep"] > 0.5 and r["rep"] > r["chance"] + 0.25, r
    assert r["n_mnn"] > 900 and r["prec3"] > 0.75, r


@pytest.mark.parametrize("fit", ["pad", "resize"])
def test_size_not_multiple_of_32(fit, xfeat_weights, bikes):
    """600×420: padding and resizing both keep keypoints in the image and the GT checks passing."""
    m = get_model("extractor", {"name": "xfeat", "max_num_keypoints": 2048, "input_fit": fit})
    pair = extract_pair(m, bikes, 600)
    (im0, f0), _ = pair
    k = f0["keypoints"]
    assert k[:, 0].min() >= -0.5 and k[:, 0].max() <= 599.5 and k[:, 1].max() <= 419.5
    if fit == "pad":
        assert torch.equal(k, k.round()), "padding keeps keypoints on input pixels"
    r = gt_scores(pair, read_h(bikes / "H1to2p"))
    assert r["rep"] > 0.5 and r["prec3"] > 0.75, r


def test_random_descriptor_network_fails_the_same_checks(tmp_path, xfeat_weights, bikes):
    """Negative control: trained keypoint head, random backbone → descriptor matching collapses."""
    torch.manual_seed(0)
    state = torch.load(xfeat_weights, map_location="cpu", weights_only=True)
    rand = {
        k: torch.randn_like(v) * v.std()
        if v.is_floating_point() and v.numel() > 1 and "keypoint_head" not in k
        else v
        for k, v in state.items()
    }
    path = tmp_path / "random.pt"
    torch.save(rand, path)
    m = get_model("extractor", {"name": "xfeat", "weights": str(path), "max_num_keypoints": 2048})
    r = gt_scores(extract_pair(m, bikes, 640), read_h(bikes / "H1to2p"))
    assert r["rep"] > 0.5, r  # same detector
    assert r["prec3"] < 0.3, r


def test_sampling_follows_pixel_centre_convention():
    """Feature cell i is centred on pixel 8i + 3.5: bilinear on a ramp f(u) = u gives
    (x + 0.5)/8 − 0.5, and both modes return the cell value exactly at cell centres."""
    w, h = 12, 9
    ramp = torch.arange(w, dtype=torch.float64).expand(1, 1, h, w).contiguous()
    x = torch.tensor([[[20.0, 30.0], [51.3, 40.0], [8 * 5 + 3.5, 17.0]]], dtype=torch.float64)
    v = sample_map(ramp, x, (8 * w, 8 * h), "bilinear")[0, :, 0]
    torch.testing.assert_close(v, (x[0, :, 0] + 0.5) / 8 - 0.5)
    cells = torch.randn(1, 3, h, w, dtype=torch.float64)
    centres = torch.tensor(
        [[[8 * 2 + 3.5, 8 * 4 + 3.5], [8 * 9 + 3.5, 8 * 1 + 3.5]]], dtype=torch.float64
    )
    for mode in ("bilinear", "bicubic"):
        v = sample_map(cells, centres, (8 * w, 8 * h), mode)[0]
        torch.testing.assert_close(v, torch.stack([cells[0, :, 4, 2], cells[0, :, 1, 9]]))


def test_rgb_is_channel_mean_and_train_keeps_batchnorm_frozen(model, bikes):
    im = load(bikes / "img1.png", resize=256).tensor
    with torch.no_grad():
        a = model({"image": im})
        model.train()
        b = model({"image": im.mean(1, keepdim=True)})
        model.eval()
    assert not model.net.training
    torch.testing.assert_close(a["keypoints"], b["keypoints"])
    torch.testing.assert_close(a["descriptors"], b["descriptors"])


def test_bad_conf_and_weights(tmp_path, xfeat_weights):
    with pytest.raises(ConfigError, match="input_fit"):
        get_model("extractor", {"name": "xfeat", "input_fit": "crop"})
    with pytest.raises(WeightsError, match="does not exist"):
        get_model("extractor", {"name": "xfeat", "weights": str(tmp_path / "missing.pt")})
    other = tmp_path / "other.pt"
    torch.save({"conv1a.weight": torch.zeros(1)}, other)
    with pytest.raises(WeightsError, match=r"do not fit this XFeat .*missing keys"):
        get_model("extractor", {"name": "xfeat", "weights": str(other)})


@pytest.mark.parametrize("threshold", [0.05, 0.0])
def test_maxima_above_equals_the_dense_max_pool(threshold):
    """The sparse window max (few pixels above the threshold) and the dense fallback (many) give
    XFeat's mask: ties kept, borders padded with -inf."""
    from tiepoint.models.extractors.xfeat import maxima_above

    torch.manual_seed(0)
    heat = torch.rand(2, 1, 37, 53) ** 8  # few values above 0.05, every value above 0
    heat[0, 0, 10, 10:13] = 0.9  # a tie: all three kept
    heat[1, 0, 0, 0] = 0.95  # a corner maximum
    dense = (heat == torch.nn.functional.max_pool2d(heat, 5, 1, 2)) & (heat > threshold)
    got = maxima_above(heat, 5, threshold)
    assert torch.equal(got, dense)
    assert got[0, 0, 10, 10:13].all() and got[1, 0, 0, 0]
