"""LightGlue blocks against analytic results and kornia's independent implementation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiepoint.errors import WeightsError
from tiepoint.models.matchers.lightglue import (
    LightGlue,
    apply_rotary,
    convert_state_dict,
    filter_matches,
    log_double_softmax,
    normalize_keypoints,
)


def test_rotary_is_a_rotation_of_each_pair():
    theta = torch.rand(1, 1, 5, 4) * 6  # (B, H, N, d/2)
    freqs = torch.stack([theta.cos(), theta.sin()]).repeat_interleave(2, -1)
    t = torch.randn(1, 1, 5, 8)
    out = apply_rotary(freqs, t)
    a, b = t[..., 0::2], t[..., 1::2]
    torch.testing.assert_close(out[..., 0::2], a * theta.cos() - b * theta.sin())
    torch.testing.assert_close(out[..., 1::2], b * theta.cos() + a * theta.sin())


def test_rotary_attention_depends_only_on_relative_position():
    lg = LightGlue(pretrained=False, input_dim=32, descriptor_dim=32, num_heads=1, n_layers=1)
    p = torch.rand(1, 2, 2)
    q, k = torch.randn(1, 1, 1, 32), torch.randn(1, 1, 1, 32)

    def score(shift):
        enc = lg.posenc(p + shift)  # (2, B, 1, N, d)
        return (apply_rotary(enc[:, :, :, :1], q) * apply_rotary(enc[:, :, :, 1:], k)).sum()

    torch.testing.assert_close(score(0.0), score(torch.tensor([0.3, -0.7])), atol=1e-4, rtol=1e-4)


def test_normalize_keypoints_long_side_spans_unit_interval():
    size = torch.tensor([[640.0, 480.0]])
    kpts = torch.tensor([[[0.0, 0.0], [640.0, 480.0], [320.0, 240.0]]])
    out = normalize_keypoints(kpts, size)
    torch.testing.assert_close(out, torch.tensor([[[-1.0, -0.75], [1.0, 0.75], [0.0, 0.0]]]))


def test_log_double_softmax_matches_explicit_formula():
    torch.manual_seed(0)
    sim, z0, z1 = torch.randn(1, 4, 3), torch.randn(1, 4, 1), torch.randn(1, 3, 1)
    scores = log_double_softmax(sim, z0, z1)[0].exp().numpy()
    s, a, b = sim[0].numpy(), z0[0, :, 0].numpy(), z1[0, :, 0].numpy()
    sig = lambda x: 1 / (1 + np.exp(-x))
    row = np.exp(s) / np.exp(s).sum(1, keepdims=True)
    col = np.exp(s) / np.exp(s).sum(0, keepdims=True)
    np.testing.assert_allclose(
        scores[:4, :3], row * col * sig(a)[:, None] * sig(b)[None], rtol=1e-5
    )
    np.testing.assert_allclose(scores[:4, 3], 1 - sig(a), rtol=1e-5)
    np.testing.assert_allclose(scores[4, :3], 1 - sig(b), rtol=1e-5)
    assert scores[4, 3] == pytest.approx(1.0)  # log 0 in the corner


def test_log_assignment_rows_and_columns_sum_to_one_for_a_confident_permutation():
    perm = torch.tensor([2, 0, 3, 1])
    sim = torch.full((1, 4, 4), -30.0)
    sim[0, torch.arange(4), perm] = 30.0
    z0 = torch.tensor([[[9.0], [-9.0], [9.0], [9.0]]])  # point 1 of image 0 is unmatchable
    z1 = torch.full((1, 4, 1), 30.0)
    p = log_double_softmax(sim, z0, z1)[0].exp()
    torch.testing.assert_close(p[:4].sum(1), torch.ones(4), atol=1e-3, rtol=0)
    assert p[1, 4] > 0.99


def test_filter_matches_is_mutual_argmax_with_threshold():
    torch.manual_seed(1)
    scores = torch.randn(1, 7, 6).log_softmax(-1)
    m0, m1, s0, s1 = filter_matches(scores, th=0.15)
    block = scores[0, :-1, :-1]
    for i in range(6):
        j = int(block[i].argmax())
        mutual = int(block[:, j].argmax()) == i
        expect = j if mutual and math.exp(block[i, j]) > 0.15 else -1
        assert int(m0[0, i]) == expect
        if expect >= 0:
            assert int(m1[0, j]) == i and float(s0[0, i]) == pytest.approx(math.exp(block[i, j]))


def _random_pair(m=300, n=280, d=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    size = torch.tensor([[640.0, 480.0]])
    k0 = torch.rand(1, m, 2, generator=g) * size
    k1 = torch.rand(1, n, 2, generator=g) * size
    d0 = torch.nn.functional.normalize(torch.randn(1, m, d, generator=g), dim=-1)
    d1 = torch.nn.functional.normalize(torch.randn(1, n, d, generator=g), dim=-1)
    # make a third of the points true correspondences: shared descriptors, nearby positions
    d1[0, : n // 3] = torch.nn.functional.normalize(
        d0[0, : n // 3] + 0.1 * torch.randn(n // 3, d, generator=g), dim=-1
    )
    k1[0, : n // 3] = k0[0, : n // 3] + 2.0
    return k0, k1, d0, d1, size


def test_official_weights_agree_with_kornia(official_weights):
    kf = pytest.importorskip("kornia.feature")
    official_weights("disk_lightglue")
    ours = LightGlue(features="disk", depth_confidence=-1, width_confidence=-1).eval()
    ref = kf.LightGlue(
        None, input_dim=128, depth_confidence=-1, width_confidence=-1, flash=False
    ).eval()
    state = {k: v for k, v in ours.state_dict().items()}
    missing, unexpected = ref.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"confidence_thresholds"}
    k0, k1, d0, d1, size = _random_pair()
    with torch.inference_mode():
        a = ours(
            {
                "keypoints0": k0,
                "keypoints1": k1,
                "descriptors0": d0,
                "descriptors1": d1,
                "image_size0": size,
                "image_size1": size,
            }
        )
        b = ref(
            {
                "image0": {"keypoints": k0, "descriptors": d0, "image_size": size},
                "image1": {"keypoints": k1, "descriptors": d1, "image_size": size},
            }
        )
    torch.testing.assert_close(a["log_assignment"], b["log_assignment"], atol=2e-4, rtol=1e-4)
    assert torch.equal(a["matches0"], b["matches0"])
    assert (a["matches0"][0, : 280 // 3] == torch.arange(280 // 3)).float().mean() > 0.9


def test_adaptive_depth_and_width_keep_the_matches(official_weights):
    official_weights("disk_lightglue")
    full = LightGlue(features="disk", depth_confidence=-1, width_confidence=-1).eval()
    fast = LightGlue(features="disk").eval()
    k0, k1, d0, d1, size = _random_pair(seed=3)
    data = {
        "keypoints0": k0,
        "keypoints1": k1,
        "descriptors0": d0,
        "descriptors1": d1,
        "image_size0": size,
        "image_size1": size,
    }
    with torch.inference_mode():
        a, b = full(data), fast(data)
    same = (a["matches0"] == b["matches0"]).float().mean()
    assert same > 0.95 and b["stop"] <= 9


def test_legacy_and_prefixed_keys_load(tmp_path):
    lg = LightGlue(pretrained=False, input_dim=64, descriptor_dim=64, num_heads=2, n_layers=3)
    legacy = {}
    for k, v in lg.state_dict().items():
        if k.startswith("transformers."):
            _, i, block, rest = k.split(".", 3)
            k = f"{block}.{i}.{rest}"
        legacy[k] = v
    assert set(convert_state_dict(legacy)) == set(lg.state_dict())
    path = tmp_path / "ckpt.tar"
    torch.save({"model": {f"matcher.{k}": v for k, v in legacy.items()}}, path)
    other = LightGlue(input_dim=64, descriptor_dim=64, num_heads=2, n_layers=3, weights=str(path))
    for k, v in lg.state_dict().items():
        assert torch.equal(v, other.state_dict()[k])


def test_weights_of_another_architecture_are_a_clear_error(tmp_path):
    lg = LightGlue(pretrained=False, input_dim=64, descriptor_dim=64, num_heads=2, n_layers=3)
    path = tmp_path / "w.pth"
    torch.save(lg.state_dict(), path)
    with pytest.raises(
        WeightsError, match=r"w\.pth: weights do not fit this LightGlue .*(shape|missing)"
    ):
        LightGlue(input_dim=64, descriptor_dim=96, num_heads=2, n_layers=3, weights=str(path))


def test_empty_inputs_give_no_matches():
    lg = LightGlue(
        pretrained=False, input_dim=32, descriptor_dim=32, num_heads=1, n_layers=2
    ).eval()
    out = lg(
        {
            "keypoints0": torch.zeros(1, 0, 2),
            "keypoints1": torch.rand(1, 5, 2),
            "descriptors0": torch.zeros(1, 0, 32),
            "descriptors1": torch.rand(1, 5, 32),
        }
    )
    assert out["matches0"].shape == (1, 0) and (out["matches1"] == -1).all()
