"""SuperPoint: no official weights are reachable here, so the network runs with random weights
saved in the official key layout, and each post-processing step is checked against a plain
re-computation."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tiepoint import weights
from tiepoint.errors import WeightsError
from tiepoint.models import get_model
from tiepoint.models.extractors.superpoint import SuperPointNet, simple_nms

# Key layout of MagicLeap's superpoint_v1.pth (also LightGlue's release file).
OFFICIAL_KEYS = [
    f"{layer}.{p}"
    for layer in [
        "conv1a",
        "conv1b",
        "conv2a",
        "conv2b",
        "conv3a",
        "conv3b",
        "conv4a",
        "conv4b",
        "convPa",
        "convPb",
        "convDa",
        "convDb",
    ]
    for p in ("weight", "bias")
]


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    net = SuperPointNet()
    with torch.no_grad():
        net.convPb.weight.mul_(40)  # peaky detector softmax, so scores vary over the image
    path = tmp_path_factory.mktemp("sp") / "superpoint_random.pth"
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(1, 3, 13, 17, generator=g), size=(77, 101), mode="bicubic")
    return x.clamp(0, 1)  # 101×77: not a multiple of 8


def brute_nms(s: np.ndarray, r: int) -> np.ndarray:
    """The same NMS written with explicit windows (clipped at the border)."""
    h, w = s.shape

    def is_window_max(a: np.ndarray) -> np.ndarray:
        out = np.zeros_like(a, bool)
        for y in range(h):
            for x in range(w):
                out[y, x] = a[y, x] == a[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1].max()
        return out

    def dilate(m: np.ndarray) -> np.ndarray:
        out = np.zeros_like(m)
        for y, x in zip(*np.nonzero(m)):
            out[max(0, y - r) : y + r + 1, max(0, x - r) : x + r + 1] = True
        return out

    keep = is_window_max(s)
    for _ in range(2):
        supp = dilate(keep)
        rest = np.where(supp, 0.0, s)
        keep = keep | (is_window_max(rest) & ~supp)
    return np.where(keep, s, 0.0)


def dense_scores(model, image: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Full-res score map and normalised descriptor cells, rebuilt by hand from the raw network."""
    gray = (image * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
    h, w = gray.shape[-2:]
    padded = torch.zeros(1, 1, -(-h // 8) * 8, -(-w // 8) * 8)
    padded[..., :h, :w] = gray
    with torch.no_grad():
        logits, desc = model.net(padded)
    prob = logits.softmax(1)[0, :64].numpy()  # (64, h/8, w/8)
    full = np.zeros(padded.shape[-2:])
    for c in range(64):  # channel c is the pixel (c // 8, c % 8) of its cell
        full[c // 8 :: 8, c % 8 :: 8] = prob[c]
    desc = desc[0].numpy()
    return full[:h, :w], desc / np.linalg.norm(desc, axis=0, keepdims=True)


def test_official_layout_round_trip(random_weights):
    state = torch.load(random_weights, weights_only=True)
    assert list(state) == OFFICIAL_KEYS
    model = get_model("extractor", {"name": "superpoint", "weights": str(random_weights)})
    for k, v in model.net.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_nms_matches_brute_force():
    rng = np.random.default_rng(0)
    s = rng.random((23, 31)) ** 4
    for r in (1, 2, 4):
        got = simple_nms(torch.from_numpy(s)[None, None], r)[0, 0].numpy()
        np.testing.assert_array_equal(got, brute_nms(s, r))
        kept = np.argwhere(got > 0)
        cheb = np.abs(kept[:, None] - kept[None]).max(-1) + np.eye(len(kept), dtype=int) * 99
        assert cheb.min() > r  # no two kept points within the window


def test_keypoints_scores_descriptors_against_manual_pipeline(random_weights, image):
    conf = {"name": "superpoint", "weights": str(random_weights)}
    model = get_model("extractor", conf)
    with torch.no_grad():
        pred = model({"image": image})
    kpts, scores, desc = (
        pred["keypoints"][0].numpy(),
        pred["keypoint_scores"][0].numpy(),
        pred["descriptors"][0].numpy(),
    )
    h, w = image.shape[-2:]
    assert kpts.shape[1] == 2 and desc.shape == (len(kpts), 256) and len(kpts) > 20

    # detection: brute-force NMS, 4 px border, threshold
    full, cells = dense_scores(model, image)
    nms = brute_nms(full, 4)
    nms[:4] = nms[-4:] = 0
    nms[:, :4] = nms[:, -4:] = 0
    ys, xs = np.nonzero(nms > 0.0005)
    assert {(x, y) for x, y in zip(xs, ys)} == {(int(x), int(y)) for x, y in kpts.round()}
    np.testing.assert_array_equal(kpts, kpts.round())
    assert kpts[:, 0].min() >= 4 and kpts[:, 0].max() <= w - 5
    assert kpts[:, 1].min() >= 4 and kpts[:, 1].max() <= h - 5
    np.testing.assert_allclose(
        scores, nms[kpts[:, 1].astype(int), kpts[:, 0].astype(int)], rtol=1e-5
    )
    assert np.all(np.diff(scores) <= 0)

    # descriptors: bilinear between the 4 surrounding cell centres (8i + 3.5), then L2-normalised
    for (x, y), d in zip(kpts, desc):
        u, v = (x + 0.5) / 8 - 0.5, (y + 0.5) / 8 - 0.5
        i, j = int(np.floor(u)), int(np.floor(v))
        a, b = u - i, v - j
        ref = (
            (1 - a) * (1 - b) * cells[:, j, i]
            + a * (1 - b) * cells[:, j, i + 1]
            + (1 - a) * b * cells[:, j + 1, i]
            + a * b * cells[:, j + 1, i + 1]
        )
        np.testing.assert_allclose(d, ref / np.linalg.norm(ref), atol=1e-5)


def test_max_num_keypoints_keeps_the_strongest(random_weights, image):
    base = {"name": "superpoint", "weights": str(random_weights)}
    with torch.no_grad():
        everything = get_model("extractor", base)({"image": image})
        few = get_model("extractor", {**base, "max_num_keypoints": 10})({"image": image})
    assert few["keypoints"].shape[1] == 10
    torch.testing.assert_close(few["keypoint_scores"][0], everything["keypoint_scores"][0, :10])
    torch.testing.assert_close(few["descriptors"][0], everything["descriptors"][0, :10])


def test_missing_official_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("TIEPOINT_HOME", str(tmp_path))
    monkeypatch.setenv("TIEPOINT_OFFLINE", "1")
    target = weights.cache_path("superpoint")
    with pytest.raises(WeightsError) as e:
        get_model("extractor", {"name": "superpoint"})
    msg = str(e.value)
    assert "superpoint" in msg and str(target) in msg and "superpoint_v1.pth" in msg
    assert "\n" not in msg


def test_wrong_checkpoint_is_a_weights_error(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"backbone.weight": torch.zeros(2)}, bad)
    with pytest.raises(
        WeightsError, match=r"do not fit this SuperPoint .*missing keys .*unexpected keys"
    ):
        get_model("extractor", {"name": "superpoint", "weights": str(bad)})
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="garbage.pth"):
        get_model("extractor", {"name": "superpoint", "weights": str(garbage)})
