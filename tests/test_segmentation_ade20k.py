"""ADE20K scene parser (GIM's frame masks): blocks against hand computations, the official
checkpoint layout, class-name exclusion and masks at the image size.

Parity with the reference code (bit-identical logits on random weights) is in
benchmarks/ade20k_parity.py and docs/video.md; it needs the reference installed, so no test here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tiepoint.errors import ConfigError, WeightsError
from tiepoint.models.backbones.resnet_dilated import DilatedResNet
from tiepoint.models.segmentation import (
    ADE20K_CLASSES,
    SceneParser,
    Segmenter,
    class_ids,
    exclusion_mask,
)
from tiepoint.models.segmentation.ade20k import PPMDeepSup, inference_size


def _identity_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.fill_(1)
            m.bias.data.zero_()
            m.running_mean.zero_()
            m.running_var.fill_(1 - m.eps)  # (x - 0) / sqrt(var + eps) == x


def _hand_adaptive_pool(x: np.ndarray, s: int) -> np.ndarray:
    """PSPNet bins: rows [floor(i H / s), ceil((i + 1) H / s)), likewise columns."""
    c, h, w = x.shape
    out = np.zeros((c, s, s))
    for i in range(s):
        for j in range(s):
            r0, r1 = math.floor(i * h / s), math.ceil((i + 1) * h / s)
            c0, c1 = math.floor(j * w / s), math.ceil((j + 1) * w / s)
            out[:, i, j] = x[:, r0:r1, c0:c1].mean((1, 2))
    return out


def test_ppm_pyramid_matches_hand_pooling():
    torch.manual_seed(0)
    dec = PPMDeepSup(num_class=3, fc_dim=4, channels=4).double().eval()
    _identity_bn(dec)
    for branch in dec.ppm:
        branch[1].weight.data = torch.eye(4, dtype=torch.float64)[..., None, None]
    x = torch.rand(1, 4, 13, 9, dtype=torch.float64)  # positive: the branch ReLU passes it
    with torch.no_grad():
        pyr = dec.pyramid(x)[0]
    assert pyr.shape == (4 + 4 * 4, 13, 9)
    assert torch.equal(pyr[:4], x[0])
    # scale 1 is the global mean, broadcast: no interpolation involved
    glob = x[0].mean((1, 2))[:, None, None].expand(4, 13, 9)
    torch.testing.assert_close(pyr[4:8], glob)
    for k, s in enumerate((2, 3, 6), start=1):
        hand = torch.from_numpy(_hand_adaptive_pool(x[0].numpy(), s))[None]
        up = torch.nn.functional.interpolate(hand, (13, 9), mode="bilinear", align_corners=False)
        torch.testing.assert_close(pyr[4 + 4 * k : 8 + 4 * k], up[0])


def _down(n: int) -> int:  # a stride-2 3×3 conv or max-pool with padding 1
    return (n - 1) // 2 + 1


@pytest.mark.parametrize("hw", [(37, 53), (64, 64), (101, 30)])
def test_encoder_output_stride_8_on_odd_sizes(hw):
    enc = DilatedResNet(width=2).eval()
    with torch.no_grad():
        feats = enc(torch.rand(1, 3, *hw))
    s4 = tuple(_down(_down(n)) for n in hw)
    s8 = tuple(_down(n) for n in s4)
    assert [tuple(f.shape[-2:]) for f in feats] == [s4, s8, s8, s8]
    assert [f.shape[1] for f in feats] == [8, 16, 32, 64]


def test_encoder_receptive_field_is_431_pixels():
    """Hand count of CSAIL's resnet50dilated: stem 3 convs + max-pool → 15 px at stride 4;
    layer1 3×(3×3) → 39; layer2 (stride 2 on the first 3×3) → 95 at stride 8; layer3 first 3×3
    dilation 1 then 5 at dilation 2 → 271; layer4 first at dilation 2, then 2 at 4 → 431."""
    enc = DilatedResNet(width=2).double().eval()
    _identity_bn(enc)
    for m in enc.modules():  # positive convs on a zero input: a positive impulse shows wherever
        if isinstance(m, torch.nn.Conv2d):  # it reaches (ReLUs pass, max-pools pick it up)
            m.weight.data.fill_(1.0 / m.weight[0].numel())

    def reaches(row: int) -> bool:  # does an impulse at input `row` change output row 32?
        x = torch.zeros(1, 3, 520, 8, dtype=torch.float64)
        x[0, :, row, 4] = 1.0
        with torch.no_grad():
            return bool(enc(x)[-1][0, :, 32].abs().sum() > 0)

    def edge(lo: int, hi: int, inside_at_hi: bool) -> int:  # first/last row that reaches
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if reaches(mid) == inside_at_hi:
                hi = mid
            else:
                lo = mid
        return hi if inside_at_hi else lo

    assert enc(torch.zeros(1, 3, 520, 8, dtype=torch.float64))[-1].shape[-2] == 65
    assert reaches(256) and not reaches(0) and not reaches(519)
    first, last = edge(0, 256, True), edge(256, 519, False)
    assert last - first + 1 == 431
    assert (first + last) / 2 == 32 * 8  # centred on input pixel 8 i (3×3 convs, padding 1)


# keys and shapes of CSAIL's encoder_epoch_20.pth / decoder_epoch_20.pth (ResnetDilated of
# resnet50 with the deep stem; PPMDeepsup(fc_dim=2048, num_class=150))
OFFICIAL_ENCODER = {
    "conv1.weight": (64, 3, 3, 3),
    "conv2.weight": (64, 64, 3, 3),
    "conv3.weight": (128, 64, 3, 3),
    "bn3.running_var": (128,),
    "layer1.0.conv1.weight": (64, 128, 1, 1),
    "layer1.0.downsample.0.weight": (256, 128, 1, 1),
    "layer3.0.downsample.0.weight": (1024, 512, 1, 1),
    "layer3.5.conv2.weight": (256, 256, 3, 3),
    "layer4.2.conv3.weight": (2048, 512, 1, 1),
    "layer4.2.bn3.running_mean": (2048,),
}
OFFICIAL_DECODER = {
    "ppm.0.1.weight": (512, 2048, 1, 1),
    "ppm.3.2.running_var": (512,),
    "cbr_deepsup.0.weight": (512, 1024, 3, 3),
    "conv_last.0.weight": (512, 4096, 3, 3),
    "conv_last.1.weight": (512,),
    "conv_last.4.weight": (150, 512, 1, 1),
    "conv_last.4.bias": (150,),
    "conv_last_deepsup.weight": (150, 512, 1, 1),
    "conv_last_deepsup.bias": (150,),
}


def test_state_dict_has_the_official_layout():
    model = SceneParser()
    enc, dec = model.encoder.state_dict(), model.decoder.state_dict()
    for own, official in ((enc, OFFICIAL_ENCODER), (dec, OFFICIAL_DECODER)):
        for key, shape in official.items():
            assert tuple(own[key].shape) == shape, key
    # encoder: 3 stem + 16×3 bottleneck + 4 downsample convs, each with a BN of 5 tensors
    assert len(enc) == 55 * (1 + 5) and not any(k.startswith("fc") for k in enc)
    # decoder: 6 conv+BN (4 ppm, cbr_deepsup, conv_last.0) and 2 biased 1×1 classifiers
    assert len(dec) == 6 * (1 + 5) + 2 * 2


def _official_files(tmp_path, width=4):
    """A random small model's two files, as CSAIL writes them: SyncBN's extra buffers, and
    (older torch) no num_batches_tracked."""
    torch.manual_seed(1)
    src = SceneParser(width=width)
    paths = []
    for part in ("encoder", "decoder"):
        sd = {}
        for k, v in getattr(src, part).state_dict().items():
            if k.endswith("num_batches_tracked"):
                continue
            sd[k] = torch.randn_like(v) if v.is_floating_point() else v
            if k.endswith(".running_mean"):
                p = k[: -len("running_mean")]
                sd[p + "_tmp_running_mean"] = torch.zeros_like(v)
                sd[p + "_tmp_running_var"] = torch.ones_like(v)
                sd[p + "_running_iter"] = torch.ones(1)
        path = tmp_path / f"{part}_epoch_20.pth"
        torch.save(sd, path)
        paths.append(path)
    return paths


def test_loader_reads_official_files_strictly(tmp_path):
    enc_path, dec_path = _official_files(tmp_path)
    model = SceneParser.from_checkpoints(enc_path, dec_path, width=4)
    for part, path in (("encoder", enc_path), ("decoder", dec_path)):
        written = torch.load(path)
        own = getattr(model, part).state_dict()
        for k, v in own.items():
            if not k.endswith("num_batches_tracked"):
                assert torch.equal(v, written[k]), k


def test_loader_names_a_wrong_key_and_shape(tmp_path):
    enc_path, dec_path = _official_files(tmp_path)
    sd = torch.load(enc_path)
    sd["layer2.1.conv_2.weight"] = sd.pop("layer2.1.conv2.weight")
    torch.save(sd, enc_path)
    with pytest.raises(WeightsError) as e:
        SceneParser.from_checkpoints(enc_path, dec_path, width=4)
    msg = str(e.value)
    assert "\n" not in msg and str(enc_path) in msg and "'layer2.1.conv_2.weight'" in msg
    enc_path, dec_path = _official_files(tmp_path)
    sd = torch.load(dec_path)
    sd["conv_last.4.weight"] = torch.zeros(151, *sd["conv_last.4.weight"].shape[1:])
    torch.save(sd, dec_path)
    with pytest.raises(WeightsError, match=r"'conv_last\.4\.weight' has shape \(151,"):
        SceneParser.from_checkpoints(enc_path, dec_path, width=4)


def test_class_names_and_exclusion():
    assert len(ADE20K_CLASSES) == 150 and len(set(ADE20K_CLASSES)) == 150
    # object150_info.csv: person Idx 13, sky 3, car 21 (channels are Idx - 1)
    assert class_ids(["person", "sky", "car"]) == [12, 2, 20]
    assert ADE20K_CLASSES[58] == "screen_door" and ADE20K_CLASSES[130] == "screen_silver"
    with pytest.raises(ConfigError) as e:
        class_ids(["persn"])
    assert "\n" not in str(e.value) and "did you mean 'person'" in str(e.value)
    with pytest.raises(ConfigError, match="did you mean 'sky'"):
        Segmenter(SceneParser(width=2), exclude=["skyy"])
    cm = np.array([[12, 0, 2], [20, 5, 12]], np.uint8)
    assert (exclusion_mask(cm) == np.array([[0, 1, 0], [0, 1, 0]], bool)).all()
    assert (exclusion_mask(cm, ["wall"]) == (cm != 0)).all()
    # nearest resize to the frame: each class-map cell becomes a 2×3 block
    big = exclusion_mask(cm, size=(9, 4))
    expected = np.array([[0, 1, 0], [0, 1, 0]]).repeat(2, 0).repeat(3, 1).astype(bool)
    assert big.shape == (4, 9) and (big == expected).all()


def test_inference_size_is_gims():
    assert inference_size(1226, 370) == (720, 217)  # KITTI: int(720 * 370 / 1226)
    assert inference_size(850, 680) == (720, 576)
    assert inference_size(607, 1080) == (404, 720)
    assert inference_size(1000, 1000) == (720, 720)
    assert inference_size(500, 300) == (500, 300)


def test_segmenter_mask_has_the_image_size():
    torch.manual_seed(0)
    model = SceneParser(width=2)
    g = torch.Generator().manual_seed(0)
    for m in model.modules():  # random BN statistics, so that the random net predicts > 1 class
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.running_mean = torch.randn(n, generator=g) * 0.5
            m.running_var = torch.rand(n, generator=g) + 0.5
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.5
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (45, 71, 3)) * np.linspace(0, 1, 71)[None, :, None]
    img = img.astype(np.uint8)
    seg = Segmenter(model, exclude=["wall"], long_side=32)
    cm = seg.class_map(img)
    assert cm.shape == (20, 32) and cm.dtype == np.uint8  # inference_size(71, 45, 32)
    top = ADE20K_CLASSES[int(np.bincount(cm.ravel()).argmax())]
    seg = Segmenter(model, exclude=[top], long_side=32)
    mask = seg(img)
    assert mask.shape == (45, 71) and mask.dtype == bool and 0 < mask.mean() < 1
    # nearest neighbour by hand: frame pixel (y, x) takes class-map cell (y*20//45, x*32//71)
    ys, xs = np.arange(45) * 20 // 45, np.arange(71) * 32 // 71
    assert (mask == (cm[ys][:, xs] != ADE20K_CLASSES.index(top))).all()
    odd = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)  # below long_side: no resize
    assert seg(odd).shape == (37, 53)
    assert (seg(odd.astype(np.float32) / 255) == seg(odd)).all()  # float input in [0, 1]
