"""DISK with the official depth weights, checked against the GT homography of a real pair."""

import numpy as np
import pytest
import torch
from helpers import extract_pair, gt_warp, mutual_nn, read_h, repeatability

from tiepoint import weights
from tiepoint.errors import ImageError, WeightsError
from tiepoint.images import load
from tiepoint.models import get_model

RESIZE = 640


@pytest.fixture(scope="module")
def bikes(data_dir):
    return data_dir / "homography" / "oxford_bikes"


@pytest.fixture(scope="session")
def disk_weights(official_weights):
    official_weights("disk-depth")
    return weights.cache_path("disk-depth")


@pytest.fixture(scope="module")
def model(disk_weights):
    torch.manual_seed(0)
    return get_model("extractor", {"name": "disk", "max_num_keypoints": 2048}).eval()


@pytest.fixture(scope="module")
def pair(model, bikes):
    """Features of bikes img1 and img2 at 640 px, plus what is needed to apply the GT homography."""
    return extract_pair(model, bikes, RESIZE), read_h(bikes / "H1to2p")


def test_outputs_well_formed(pair):
    im, f = pair[0][0]
    n = f["keypoints"].shape[0]
    h, w = im.tensor.shape[-2:]
    assert 1000 < n <= 2048
    assert f["keypoint_scores"].shape == (n,) and f["descriptors"].shape == (n, 128)
    s = f["keypoint_scores"]
    assert torch.all(s[:-1] >= s[1:]), "keypoints must be sorted by score"
    k = f["keypoints"]
    assert torch.equal(k, k.round()), "DISK keypoints are heat-map pixels (centres at integers)"
    assert (
        k[:, 0].min() >= 0
        and k[:, 0].max() <= w - 1
        and k[:, 1].min() >= 0
        and k[:, 1].max() <= h - 1
    )
    torch.testing.assert_close(f["descriptors"].norm(dim=-1), torch.ones(n))


def test_repeatable_and_matchable_under_gt_homography(pair):
    """Official weights loaded right ⇔ keypoints repeat and descriptors match under the true H."""
    ((im0, f0), (im1, f1)), H = pair
    k0, k1 = f0["keypoints"].numpy(), f1["keypoints"].numpy()
    size1 = im1.tensor.shape[-1], im1.tensor.shape[-2]
    k0w = gt_warp(k0, H, im0.scale, im1.scale)
    rep = repeatability(k0w, k1, size1)
    # chance level: as many uniformly random img1 points as keypoints, same test
    rng = np.random.default_rng(0)
    rand = rng.uniform([0, 0], [im0.tensor.shape[-1] - 1, im0.tensor.shape[-2] - 1], size=k0.shape)
    chance = repeatability(gt_warp(rand, H, im0.scale, im1.scale), k1, size1)
    assert rep > 0.7 and rep > chance + 0.4, (rep, chance)  # measured 0.87 (chance ≈ 0.2)

    i0, i1 = mutual_nn(f0["descriptors"], f1["descriptors"])
    err = np.linalg.norm(k0w[i0] - k1[i1], axis=1)
    assert len(i0) > 1000
    assert (err < 3).mean() > 0.9, (err < 3).mean()  # measured 0.99
    assert (
        np.median(err) < 1.0
    )  # integer keypoints on a blur pair: correct matches are ~pixel exact


@pytest.fixture(scope="module")
def small_image(bikes):
    im = load(bikes / "img1.png", resize=160).tensor  # 160×112
    return im[..., 5:105, 7:150]  # 143×100: not a multiple of 16


def test_padding_and_divisibility(model, small_image):
    with torch.no_grad():
        pred = model({"image": small_image})
        ref = model.net(small_image, n=2048, pad_if_not_divisible=True)[0]  # kornia's own forward
    k = pred["keypoints"][0]
    assert k.shape[0] > 20
    assert k[:, 0].max() <= 142 and k[:, 1].max() <= 99
    order = torch.argsort(ref.detection_scores, descending=True, stable=True)
    torch.testing.assert_close(k, ref.keypoints[order])
    torch.testing.assert_close(pred["descriptors"][0], ref.descriptors[order])
    with torch.no_grad():
        tiny = model({"image": small_image[..., 40:54, :60]})["keypoints"][0]  # padded to 32×64
    assert len(tiny) > 0 and tiny[:, 0].max() <= 59 and tiny[:, 1].max() <= 13
    strict = get_model("extractor", {"name": "disk", "pad_if_not_divisible": False})
    with pytest.raises(ImageError, match="divisible by 16"):
        strict({"image": small_image})


def test_top_k_is_the_strongest_subset_and_gray_is_rgb(model, small_image):
    everything = get_model("extractor", {"name": "disk", "max_num_keypoints": None})
    few = get_model("extractor", {"name": "disk", "max_num_keypoints": 30})
    with torch.no_grad():
        a = everything({"image": small_image})
        b = few({"image": small_image})
        gray = small_image.mean(1, keepdim=True)
        g = model({"image": gray})
        g3 = model({"image": gray.expand(-1, 3, -1, -1)})
    assert b["keypoints"].shape[1] == 30 < a["keypoints"].shape[1]
    torch.testing.assert_close(b["keypoint_scores"][0], a["keypoint_scores"][0, :30])
    torch.testing.assert_close(b["keypoints"][0], a["keypoints"][0, :30])
    torch.testing.assert_close(g["descriptors"], g3["descriptors"])


def test_batch_matches_single_images(model, small_image):
    other = small_image.flip(-1)
    with torch.no_grad():
        batch = model({"image": torch.cat([small_image, other])})
        singles = [model({"image": x}) for x in (small_image, other)]
    for i, s in enumerate(singles):
        n = s["keypoints"].shape[1]
        torch.testing.assert_close(batch["keypoints"][i, :n], s["keypoints"][0])
        torch.testing.assert_close(
            batch["descriptors"][i, :n], s["descriptors"][0], atol=1e-4, rtol=1e-4
        )
        assert torch.all(batch["keypoint_scores"][i, n:] == 0)  # padding


def test_bad_weights(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        get_model("extractor", {"name": "disk", "weights": str(tmp_path / "nope.pth")})
    wrong = tmp_path / "wrong.pth"
    torch.save({"extractor": {"conv.weight": torch.zeros(3)}}, wrong)
    with pytest.raises(WeightsError, match=r"do not fit this DISK .*missing keys"):
        get_model("extractor", {"name": "disk", "weights": str(wrong)})


def test_sparse_last_layer_equals_the_dense_convolution_at_the_keypoints():
    """The descriptor channels evaluated only at keypoints (borders included) equal the full conv."""
    from tiepoint.models.extractors.disk import sparse_last_layer

    torch.manual_seed(0)
    conv = torch.nn.Conv2d(6, 9, 5, padding="same")
    x = torch.randn(6, 23, 31)
    kpts = torch.tensor([[0, 0], [30, 22], [0, 22], [30, 0], [1, 1], [15, 11], [29, 21]])
    with torch.no_grad():
        dense = conv(x[None])[0, :7]  # (7, H, W)
        sparse = sparse_last_layer(x, conv, kpts, 7)
    torch.testing.assert_close(sparse, dense[:, kpts[:, 1], kpts[:, 0]].T)
