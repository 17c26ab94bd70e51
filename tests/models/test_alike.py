"""ALIKE: strict loading of the official checkpoint layout (written here from alnet.py's module
names and shapes), DKD detection on hand-made score maps, descriptor sampling by hand."""

import math

import pytest
import torch

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models import get_model
from tiepoint.models.extractors.alike import ALIKE, _bilinear


def _bn(prefix: str, c: int, g: torch.Generator) -> dict:
    return {
        f"{prefix}.weight": 1 + 0.1 * torch.randn(c, generator=g),
        f"{prefix}.bias": 0.1 * torch.randn(c, generator=g),
        f"{prefix}.running_mean": 0.1 * torch.randn(c, generator=g),
        f"{prefix}.running_var": 1 + torch.rand(c, generator=g),
        f"{prefix}.num_batches_tracked": torch.tensor(0),
    }


def official_state(c1, c2, c3, c4, dim, single_head, seed=0) -> dict:
    """The key layout of Shiaoming/ALIKE's ALNet state dict (alike-*.pth), random values."""
    g = torch.Generator().manual_seed(seed)

    def w(*shape):
        return torch.randn(*shape, generator=g) / math.sqrt(math.prod(shape[1:]))

    sd = {"block1.conv1.weight": w(c1, 3, 3, 3), "block1.conv2.weight": w(c1, c1, 3, 3)}
    sd |= _bn("block1.bn1", c1, g) | _bn("block1.bn2", c1, g)
    for i, (cin, cout) in enumerate([(c1, c2), (c2, c3), (c3, c4)], start=2):
        sd |= {
            f"block{i}.conv1.weight": w(cout, cin, 3, 3),
            f"block{i}.conv2.weight": w(cout, cout, 3, 3),
            f"block{i}.downsample.weight": w(cout, cin, 1, 1),
            f"block{i}.downsample.bias": 0.1 * torch.randn(cout, generator=g),
        }
        sd |= _bn(f"block{i}.bn1", cout, g) | _bn(f"block{i}.bn2", cout, g)
    for i, c in enumerate([c1, c2, c3, dim], start=1):
        sd[f"conv{i}.weight"] = w(dim // 4, c, 1, 1)
    if not single_head:
        sd["convhead1.weight"] = w(dim, dim, 1, 1)
    sd["convhead2.weight"] = w(dim + 1, dim, 1, 1)
    return sd


@pytest.fixture(scope="module")
def alike_n_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("alike") / "alike-n.pth"
    torch.save(official_state(16, 32, 64, 128, 128, True), path)
    return path


@pytest.mark.parametrize(
    "name, cfg",
    [("alike-t", (8, 16, 32, 64, 64, True)), ("alike-l", (32, 64, 128, 128, 128, False))],
)
def test_official_layout_loads_strictly(tmp_path, name, cfg):
    sd = official_state(*cfg)
    path = tmp_path / f"{name}.pth"
    torch.save(sd, path)
    model = ALIKE({"model_name": name, "weights": str(path)})
    ours = model.state_dict()
    assert ours.keys() == sd.keys()
    assert all(torch.equal(ours[k], sd[k]) for k in sd)
    assert model.descriptor_dim == cfg[4]


def test_wrong_key_is_one_line_error(tmp_path):
    sd = official_state(16, 32, 64, 128, 128, True)
    sd["convhead3.weight"] = sd.pop("convhead2.weight")
    path = tmp_path / "bad.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError, match="bad.pth: weights do not fit this alike-n") as e:
        ALIKE({"model_name": "alike-n", "weights": str(path)})
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="alike-n"):
        ALIKE({"model_name": "alike-x", "weights": str(path)})


def _blob_map(h, w, centres, sigma=1.0):
    """Gaussian bumps (value ≤ 0.9) at float (x, y) centres, 0.05 elsewhere."""
    y, x = torch.meshgrid(torch.arange(h * 1.0), torch.arange(w * 1.0), indexing="ij")
    s = torch.full((h, w), 0.05)
    for cx, cy in centres:
        s = torch.maximum(s, 0.9 * torch.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * sigma**2)))
    return s


def test_dkd_is_equivariant_to_shift_and_rot90(alike_n_file):
    model = ALIKE({"weights": str(alike_n_file), "detection_threshold": 0.5})
    centres = [(10.3, 12.6), (30.0, 8.0), (21.7, 25.2), (40.4, 30.9)]
    h, w = 40, 52
    k, s = model.detect(_blob_map(h, w, centres))
    assert len(k) == len(centres)
    # shifted map: the same keypoints, shifted
    k2, _ = model.detect(_blob_map(h, w, [(x + 3, y - 2) for x, y in centres]))
    assert torch.allclose(k2.sort(0).values, (k + torch.tensor([3.0, -2.0])).sort(0).values)
    # torch.rot90 (counter-clockwise): pixel (x, y) of an H×W map goes to (y, W − 1 − x)
    k3, s3 = model.detect(torch.rot90(_blob_map(h, w, centres)))
    expected = torch.stack([k[:, 1], w - 1 - k[:, 0]], -1)
    d = torch.cdist(expected.double(), k3.double(), compute_mode="donot_use_mm_for_euclid_dist")
    assert d.min(1).values.max() < 1e-4
    assert torch.allclose(s.sort().values, s3.sort().values, atol=1e-6)


def test_soft_argmax_matches_hand_computation(alike_n_file):
    model = ALIKE({"weights": str(alike_n_file), "detection_threshold": 0.5})
    s = torch.zeros(20, 20)
    s[10, 10], s[10, 11], s[9, 10] = 1.0, 0.9, 0.8  # peak, right neighbour, upper neighbour
    k, ks = model.detect(s)
    # exp((v − max)/T) with T = 0.1: 1 at the peak, e^-1 right, e^-2 up, e^-10 at the 22 zeros
    z = 1 + math.exp(-1) + math.exp(-2) + 22 * math.exp(-10)
    # the window's offsets sum to 0, so the 22 zeros' x offsets sum to −1 and their y offsets to +1
    dx = (math.exp(-1) - math.exp(-10)) / z
    dy = (-math.exp(-2) + math.exp(-10)) / z
    assert len(k) == 1
    assert k[0, 0].item() == pytest.approx(10 + dx, abs=1e-5)
    assert k[0, 1].item() == pytest.approx(10 + dy, abs=1e-5)
    # the score is the map sampled bilinearly at the refined point
    fx, fy = dx, -dy  # towards (11, 10) and (10, 9)
    hand = (1 - fx) * (1 - fy) * 1.0 + fx * (1 - fy) * 0.9 + (1 - fx) * fy * 0.8
    assert ks[0].item() == pytest.approx(hand, abs=1e-5)


def test_bilinear_sampling_by_hand():
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(3, 6, 7, generator=g)
    x, y = 2.25, 3.75
    hand = (
        0.75 * 0.25 * fmap[:, 3, 2]
        + 0.25 * 0.25 * fmap[:, 3, 3]
        + 0.75 * 0.75 * fmap[:, 4, 2]
        + 0.25 * 0.75 * fmap[:, 4, 3]
    )
    assert torch.allclose(_bilinear(fmap, torch.tensor([[x, y]]))[:, 0], hand, atol=1e-6)


def test_forward_on_a_real_image(alike_n_file, data_dir):
    from tiepoint.images import load

    img = load(data_dir / "homography" / "oxford_boat" / "img1.png", resize=160)
    image = img.tensor[None] if img.tensor.ndim == 3 else img.tensor
    model = get_model(
        "extractor",
        {"name": "alike", "weights": str(alike_n_file), "max_num_keypoints": 50, "subpixel": False},
    ).eval()
    with torch.no_grad():
        out = model({"image": image})
        _, dmap = model.dense(image.expand(-1, 3, -1, -1))
    k, d = out["keypoints"][0], out["descriptors"][0]
    h, w = image.shape[-2:]
    assert 0 < len(k) <= 50 and d.shape == (len(k), 128)
    assert (k[:, 0] >= 3).all() and (k[:, 0] < w - 2).all() and (k[:, 1] >= 3).all()
    assert (out["keypoint_scores"][0].diff() <= 0).all()  # best first
    # without subpixel, a descriptor is the normalised map at the keypoint's pixel
    ref = dmap[0][:, k[:, 1].long(), k[:, 0].long()].t()
    assert torch.allclose(d, ref / ref.norm(dim=1, keepdim=True), atol=1e-5)
