"""DKMv3: building blocks against independent computations, checkpoint layout and loading, and
whole forwards at small sizes (random weights; parity with the reference code is measured by
benchmarks/dkm_parity.py, see docs/dkm.md)."""

from __future__ import annotations

import math

import pytest
import torch

from tiepoint.errors import ConfigError, ImageError, WeightsError
from tiepoint.models import model_class
from tiepoint.models.backbones.resnet import ResNet50, resnet50_state_keys
from tiepoint.models.dense.dkm import DKM
from tiepoint.models.dense.gp import GP
from tiepoint.models.dense.refiner import local_correlation

SMALL = {"pretrained": False, "resize": [64, 96], "upsample_res": [96, 128]}


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    return DKM(SMALL).eval()


def test_gp_posterior_mean_equals_the_closed_form_solved_directly():
    torch.manual_seed(0)
    gp = GP(gp_dim=16, T=0.2, sigma_noise=0.1).double()
    x, y = torch.randn(2, 8, 3, 4).double(), torch.randn(2, 8, 5, 3).double()
    mu = gp(x, y)
    W, bias = gp.pos_conv.weight[:, :, 0, 0], gp.pos_conv.bias
    for b in range(2):
        xs = [x[b, :, i, j] for i in range(3) for j in range(4)]
        ys = [y[b, :, i, j] for i in range(5) for j in range(3)]
        # image-1 pixel centres: x = -1 + (2j+1)/w, y = -1 + (2i+1)/h
        coords = [
            torch.tensor([-1 + (2 * j + 1) / 3, -1 + (2 * i + 1) / 5], dtype=torch.float64)
            for i in range(5)
            for j in range(3)
        ]
        f = torch.stack([torch.cos(8 * math.pi * (W @ c + bias)) for c in coords])
        # DKM's cosine: a·c / (|a||c| + 1e-6)
        k = lambda a, c: math.exp((float(a @ c / (a.norm() * c.norm() + 1e-6)) - 1) / 0.2)
        K_xy = torch.tensor([[k(a, c) for c in ys] for a in xs], dtype=torch.float64)
        K_yy = torch.tensor([[k(a, c) for c in ys] for a in ys], dtype=torch.float64)
        expected = K_xy @ torch.linalg.solve(K_yy + 0.1 * torch.eye(15).double(), f)
        got = mu[b].flatten(1).T
        assert torch.allclose(got, expected, atol=1e-8), (got - expected).abs().max()


def _bilinear_zero_pad(img, u, v):
    """Sample img (C,H,W) at normalised (u, v), align_corners=False, zeros outside."""
    C, H, W = img.shape
    px, py = ((u + 1) * W - 1) / 2, ((v + 1) * H - 1) / 2
    x0, y0 = math.floor(px), math.floor(py)
    out = torch.zeros(C, dtype=img.dtype)
    for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
        for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
            if 0 <= xx < W and 0 <= yy < H:
                out += wx * wy * img[:, yy, xx]
    return out


def test_local_correlation_equals_an_explicit_loop():
    torch.manual_seed(0)
    c, h, w, r = 4, 5, 6, 2
    f0, f1 = torch.randn(1, c, h, w).double(), torch.randn(1, c, 7, 8).double()
    flow = torch.rand(1, 2, h, w).double() * 2.2 - 1.1  # some targets outside the image
    corr = local_correlation(f0, f1, r, flow)
    assert corr.shape == (1, (2 * r + 1) ** 2, h, w)
    for i in range(h):
        for j in range(w):
            u, v = float(flow[0, 0, i, j]), float(flow[0, 1, i, j])
            for k, (dy, dx) in enumerate(
                (dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1)
            ):  # one step = one pixel of the (h, w) grid, in normalised units
                s = _bilinear_zero_pad(f1[0], u + 2 * dx / w, v + 2 * dy / h)
                expected = float(f0[0, :, i, j] @ s) / math.sqrt(c)
                assert abs(float(corr[0, k, i, j]) - expected) < 1e-9


def test_resnet50_has_torchvisions_state_layout_and_stride_pyramid():
    net = ResNet50()
    state = net.state_dict()
    assert list(state) == resnet50_state_keys() and len(state) == 320
    assert len(ResNet50(with_fc=False).state_dict()) == 318
    # torchvision v1.5: the stride sits on the 3×3 conv; shapes of torchvision's resnet50
    shapes = {
        "conv1.weight": (64, 3, 7, 7),
        "layer1.0.conv1.weight": (64, 64, 1, 1),
        "layer1.0.downsample.0.weight": (256, 64, 1, 1),
        "layer2.0.conv2.weight": (128, 128, 3, 3),
        "layer3.5.conv3.weight": (1024, 256, 1, 1),
        "layer4.0.downsample.0.weight": (2048, 1024, 1, 1),
        "layer4.2.bn3.running_var": (2048,),
        "fc.weight": (1000, 2048),
    }
    assert {k: tuple(state[k].shape) for k in shapes} == shapes
    assert net.layer2[0].conv2.stride == (2, 2) and net.layer2[0].conv1.stride == (1, 1)
    feats = net.eval().features(torch.rand(1, 3, 70, 100))
    channels = {1: 3, 2: 64, 4: 256, 8: 512, 16: 1024, 32: 2048}
    for s, f in feats.items():
        assert f.shape[1] == channels[s]
        assert f.shape[-2:] == (math.ceil(70 / s), math.ceil(100 / s)), s
    assert net(torch.rand(1, 3, 64, 64)).shape == (1, 1000)
    assert set(net.features(torch.rand(1, 3, 64, 64), max_stride=8)) == {1, 2, 4, 8}


def test_dkm_state_keys_follow_the_official_checkpoint(small_model):
    keys = set(small_model.state_dict())
    # the reference DKMv3 state dict has 813 keys (measured with benchmarks/dkm_parity.py),
    # two of them the ResNet classifier that DKM never uses and our loader drops
    assert len(keys) == 811
    official = {
        "encoder.net.layer4.2.bn3.running_var",
        "decoder.proj.32.weight",
        "decoder.gps.16.pos_conv.weight",
        "decoder.embedding_decoder.feat_input_modules.32.weight",
        "decoder.embedding_decoder.rrb_d.16.bn.running_mean",
        "decoder.embedding_decoder.cab.32.conv2.bias",
        "decoder.embedding_decoder.rrb_u.32.conv3.weight",
        "decoder.embedding_decoder.terminal_module.16.bias",
        "decoder.conv_refiner.16.disp_emb.weight",
        "decoder.conv_refiner.8.hidden_blocks.7.3.weight",
        "decoder.conv_refiner.1.block1.1.num_batches_tracked",
        "decoder.conv_refiner.1.out_conv.weight",
    }
    assert official <= keys
    shapes = small_model.state_dict()
    assert tuple(shapes["decoder.conv_refiner.16.block1.0.weight"].shape) == (1377, 1, 5, 5)
    assert tuple(shapes["decoder.conv_refiner.2.block1.0.weight"].shape) == (144, 1, 5, 5)
    assert tuple(shapes["decoder.conv_refiner.1.block1.0.weight"].shape) == (24, 1, 5, 5)


def test_gim_checkpoint_layout_maps_onto_ours():
    w = torch.zeros(1)
    gim = {"state_dict": {"model.decoder.proj.16.weight": w, "model.encoder.net.fc.weight": w}}
    assert DKM.checkpoint_state(gim) == {"decoder.proj.16.weight": w}
    official = {"encoder.net.conv1.weight": w, "encoder.net.fc.bias": w}  # Parskatt/DKM layout
    assert DKM.checkpoint_state(official) == {"encoder.net.conv1.weight": w}


def test_wrong_architecture_is_one_line_naming_the_first_key(small_model, tmp_path):
    state = small_model.state_dict()
    bad = {"decoder.proj.16.weight": torch.zeros(256, 1024, 1, 1)}
    bad.update({k: v for k, v in state.items() if k.startswith("decoder.gps.16")})
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(WeightsError) as e:
        DKM({**SMALL, "weights": str(tmp_path / "bad.pth")})
    msg = str(e.value)
    assert "\n" not in msg and "bad.pth" in msg
    first_missing = sorted(set(state) - set(bad))[0]
    assert "decoder.proj.16.weight" in msg and first_missing in msg


@pytest.mark.slow
def test_checkpoint_round_trip_ours_and_gim_layout(small_model, tmp_path):
    state = {k: v.clone() for k, v in small_model.state_dict().items()}
    torch.manual_seed(1)
    for v in state.values():
        if v.is_floating_point():
            v.add_(0.01 * torch.randn_like(v))
    torch.save(state, tmp_path / "ours.pth")
    loaded = DKM({**SMALL, "weights": str(tmp_path / "ours.pth")})
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())
    # GIM: a Lightning checkpoint, keys prefixed `model.`, with the classifier it drops
    gim = {f"model.{k}": v for k, v in state.items()}
    gim["model.encoder.net.fc.weight"] = torch.zeros(1000, 2048)
    gim["model.encoder.net.fc.bias"] = torch.zeros(1000)
    torch.save({"state_dict": gim, "epoch": 3}, tmp_path / "gim.ckpt")
    loaded = DKM({**SMALL, "weights": str(tmp_path / "gim.ckpt")})
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in state.items())


def test_symmetric_forward_at_a_small_size(small_model, data_dir):
    import numpy as np
    from PIL import Image

    def load(name):
        im = np.asarray(Image.open(data_dir / "homography/oxford_bikes" / name).convert("RGB"))
        return torch.from_numpy(im.copy()).permute(2, 0, 1)[None].float() / 255

    with torch.no_grad():
        pred = small_model({"image0": load("img1.png"), "image1": load("img3.png")})
    warp, cert = pred["warp"], pred["certainty"]
    assert warp.shape == (1, 96, 256, 4) and cert.shape == (1, 96, 256)
    assert torch.isfinite(warp).all() and warp.abs().max() <= 1
    assert (cert >= 0).all() and (cert <= 1).all()
    # each half has the source pixel grid on its own side (image 0 left, image 1 right)
    ys, xs = ((torch.arange(n) * 2 + 1) / n - 1 for n in (96, 128))
    assert torch.allclose(warp[0, :, :128, 0], xs.expand(96, 128), atol=1e-6)
    assert torch.allclose(warp[0, :, :128, 1], ys[:, None].expand(96, 128), atol=1e-6)
    assert torch.allclose(warp[0, :, 128:, 2:], warp[0, :, :128, :2], atol=1e-6)
    assert set(pred["scales"]) == {32, 16, 8, 4, 2, 1}
    assert pred["scales"][1]["flow"].shape == (2, 2, 64, 96)
    assert set(pred["scales_upsampled"]) == {8, 4, 2, 1}
    # certainty is zero exactly where the (unclamped) final warp leaves the image
    final = pred["scales_upsampled"][1]["flow"]
    outside = torch.cat(((final.abs() > 1).any(1)).chunk(2), dim=2)
    assert (cert[outside] == 0).all()


def test_degenerate_images_give_finite_outputs(small_model):
    cases = [
        (torch.rand(1, 3, 1, 1), torch.rand(1, 3, 1, 1)),
        (torch.full((1, 3, 40, 40), 0.5), torch.full((1, 3, 40, 40), 0.5)),  # texture-less
        (torch.rand(1, 3, 8, 300), torch.rand(1, 1, 300, 8)),  # extreme aspect, grey image1
        (torch.zeros(2, 3, 20, 20), torch.ones(2, 3, 20, 30)),
    ]
    with torch.no_grad():
        for a, b in cases:
            pred = small_model({"image0": a, "image1": b})
            assert pred["warp"].shape == (a.shape[0], 96, 256, 4)
            assert torch.isfinite(pred["warp"]).all() and torch.isfinite(pred["certainty"]).all()
    with pytest.raises(ImageError, match="batch sizes differ"):
        small_model({"image0": torch.rand(2, 3, 8, 8), "image1": torch.rand(1, 3, 8, 8)})
    with pytest.raises(ImageError, match="image1"):
        small_model({"image0": torch.rand(1, 3, 8, 8), "image1": torch.rand(3, 8, 8)})


def test_training_mode_keeps_per_scale_outputs_and_gradients():
    torch.manual_seed(0)
    model = DKM({**SMALL, "symmetric": False, "resize": [64, 64]}).train()
    pred = model({"image0": torch.rand(1, 3, 64, 64), "image1": torch.rand(1, 3, 64, 64)})
    assert "scales_upsampled" not in pred and pred["warp"].shape == (1, 64, 64, 4)
    loss = sum(v["flow"].abs().mean() + v["logits"].mean() for v in pred["scales"].values())
    loss.backward()
    assert model.decoder.gps["32"].pos_conv.weight.grad is not None
    assert model.encoder.net.conv1.weight.grad.abs().sum() > 0


def test_gim_preset_masks_black_pixels_and_skips_normalisation():
    conf = DKM.build_conf({"preset": "gim"})
    assert (conf.resize, conf.upsample_res) == ([672, 896], [1152, 1536])
    assert not conf.normalize and conf.black_mask and conf.resize_mode == "bilinear"
    torch.manual_seed(0)
    model = DKM({"preset": "gim", "pretrained": False, "resize": [32, 32], "upsample_res": None})
    image0 = torch.rand(1, 3, 64, 64) * 0.5 + 0.5
    image0[:, :, :32] = 0.02  # below 1/32 in every channel: black
    with torch.no_grad():
        cert = model.eval()({"image0": image0, "image1": torch.rand(1, 3, 64, 64)})["certainty"]
    assert (cert[0, :16, :32] == 0).all()  # image 0's black upper half, its own (left) side
    assert (cert[0, 16:, :32] > 0).any()


def test_presets_weights_and_registry():
    assert model_class("dense", "dkm") is DKM
    assert DKM.weight_names({"preset": "outdoor"}) == ["dkmv3_outdoor"]
    assert DKM.weight_names({"preset": "indoor"}) == ["dkmv3_indoor"]
    assert DKM.weight_names({"preset": "gim"}) == ["gim_dkm_100h"]
    assert DKM.weight_names({"preset": "gim", "pretrained": False}) == []
    indoor = DKM.build_conf({"preset": "indoor"})
    assert indoor.resize == [480, 640] and indoor.upsample_res is None and indoor.normalize
    outdoor = DKM.build_conf({})
    assert outdoor.resize == [540, 720] and outdoor.upsample_res == [864, 1152]
    with pytest.raises(ConfigError, match="outdor"):
        DKM.build_conf({"preset": "outdor"})


def test_sample_takes_one_pair(small_model):
    batch = {"warp": torch.zeros(2, 4, 8, 4), "certainty": torch.ones(2, 4, 8)}
    with pytest.raises(ConfigError, match="one pair"):
        small_model.sample(batch)


def test_inference_fast_paths_equal_the_training_forms():
    """The eval-only speed-ups (BatchNorm folded into channels-last convs, local correlation one
    offset at a time) compute what the plain module path and DKM's one-call correlation compute."""
    from tiepoint.models.dense.refiner import ConvRefiner

    torch.manual_seed(0)
    f0, f1 = torch.randn(2, 8, 6, 7), torch.randn(2, 8, 6, 7)
    flow = torch.rand(2, 2, 6, 7) * 2 - 1
    looped = local_correlation(f0, f1, 2, flow)  # no gradient: one offset at a time
    one_call = local_correlation(f0.requires_grad_(), f1, 2, flow)  # the training form
    torch.testing.assert_close(looped, one_call.detach(), atol=1e-5, rtol=1e-5)

    refiner = ConvRefiner(2 * 8 + 4 + 25, 2 * (2 * 8 + 4 + 25), 3, 5, 2, 4, 2)
    for m in refiner.modules():  # non-trivial BatchNorm statistics, so folding them matters
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    refiner.eval()
    x, y = f0.detach(), f1
    with torch.no_grad():
        fast_cert, fast_disp = refiner(x, y, flow)
        refiner.training = True  # the module path, with the BatchNorms still in eval mode
        slow_cert, slow_disp = refiner(x, y, flow)
    torch.testing.assert_close(fast_cert, slow_cert, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(fast_disp, slow_disp, atol=1e-4, rtol=1e-4)
