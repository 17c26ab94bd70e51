"""`Matcher("dkm", weights=<training checkpoint>)`: the DKM class rebuilds the architecture the
checkpoint stores (conf.model.dense) and loads its `dense.` weights strictly; the pipeline keeps
the inference-time choices (sampling, symmetry, the second pass when it sets one)."""

from __future__ import annotations

import pytest
import torch
from helpers import TINY_DKM, read_h

import tiepoint
from tiepoint.errors import WeightsError
from tiepoint.models.dense.dkm import DKM
from tiepoint.models.dense_two_view_pipeline import DenseTwoViewPipeline
from tiepoint.training.checkpoints import save_checkpoint, trained_state

TRAINED = TINY_DKM  # a width/depth-reduced DKM (tests/helpers.py)


def write_checkpoint(path, dense_conf=TRAINED, seed=0):
    """A checkpoint in the trainer's layout (training.checkpoints): `dense.` weights + conf."""
    torch.manual_seed(seed)
    pipe = DenseTwoViewPipeline({"dense": dense_conf})
    for p in pipe.parameters():  # weights no fresh initialisation has
        p.data.add_(0.01 * torch.randn_like(p))
    conf = {"model": {"dense": dict(dense_conf), "loss": {"ce_weight": 0.01}}, "train": {}}
    save_checkpoint(path, {"model": trained_state(pipe), "conf": conf, "step": 3})
    return pipe.dense.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("dkm_ckpt") / "checkpoint_best.tar"
    return path, write_checkpoint(path)


@pytest.fixture(scope="module")
def leuven(data_dir):
    seq = data_dir / "homography" / "oxford_leuven"
    return seq / "img1.png", seq / "img2.png", read_h(seq / "H1to2p")


def test_matcher_rebuilds_the_trained_architecture_and_loads_its_weights(checkpoint, leuven):
    path, trained = checkpoint
    m = tiepoint.Matcher("dkm", device="cpu", weights=path)
    conf = m.dense.conf
    # architecture and input size from the checkpoint, not from the pipeline's outdoor preset
    assert (conf.encoder, conf.proj_dim, conf.refiner_blocks) == ("resnet18", 32, 1)
    assert list(conf.resize) == [64, 96] and conf.upsample_res is None
    # inference choices from the pipeline (dkm.yaml: 5000 matches) or the class (symmetric)
    assert conf.num_matches == 5000 and conf.symmetric is True and m.dense.symmetric
    own = m.dense.state_dict()
    ref = trained.state_dict()
    assert sorted(own) == sorted(ref)
    for k, v in ref.items():
        assert torch.equal(own[k], v), k
    # the rebuilt (symmetric) model predicts image 0 → 1 exactly as the trained one-way model
    torch.manual_seed(1)
    x0, x1 = torch.rand(1, 3, 70, 90), torch.rand(1, 3, 70, 90)
    with torch.no_grad():
        a = m.dense({"image0": x0, "image1": x1})
        b = trained({"image0": x0, "image1": x1})
    assert a["warp"].shape == (1, 64, 192, 4) and b["warp"].shape == (1, 64, 96, 4)
    assert torch.allclose(a["warp"][:, :, :96], b["warp"], atol=1e-5)
    assert torch.allclose(a["certainty"][:, :, :96], b["certainty"], atol=1e-5)
    # and it matches real images through the public API
    img0, img1, _ = leuven
    r = tiepoint.match(img0, img1, pipeline="dkm", device="cpu", weights=path)
    assert r.dense is not None and r.dense.warp.shape == (64, 192, 4)
    assert len(r) > 0 and r.keypoints0.shape == r.keypoints1.shape


def test_the_pipeline_may_set_the_second_pass_and_sampling(checkpoint):
    path, _ = checkpoint
    pipe = {"dense": {"name": "dkm", "upsample_res": [96, 128], "num_matches": 7}}
    m = tiepoint.Matcher(pipe, device="cpu", weights=path)
    assert list(m.dense.conf.upsample_res) == [96, 128] and m.dense.conf.num_matches == 7
    assert m.dense.conf.encoder == "resnet18" and list(m.dense.conf.resize) == [64, 96]
    # ... and the input size (a wide image matched at its aspect); the widths stay as trained
    pipe = {"dense": {"name": "dkm", "resize": [32, 128], "proj_dim": 512}}
    m = tiepoint.Matcher(pipe, device="cpu", weights=path)
    assert list(m.dense.conf.resize) == [32, 128] and m.dense.conf.proj_dim == 32
    with torch.no_grad():
        out = m.dense({"image0": torch.rand(1, 3, 40, 150), "image1": torch.rand(1, 3, 40, 150)})
    assert out["warp"].shape == (1, 32, 256, 4)


def test_checkpoints_that_do_not_fit_are_one_line_errors(tmp_path, checkpoint):
    # the stored config says one width, the weights are of another
    good = torch.load(checkpoint[0], weights_only=True)
    good["conf"]["model"]["dense"] = {**TRAINED, "proj_dim": 48}
    save_checkpoint(tmp_path / "wrong.tar", good)
    with pytest.raises(WeightsError, match=r"wrong.tar: weights do not fit this DKM \(.*shape"):
        tiepoint.Matcher("dkm", device="cpu", weights=tmp_path / "wrong.tar")
    # a training checkpoint of another dense model
    other = dict(good)
    other["conf"] = {"model": {"dense": {"name": "dense_toy:ToyDense"}}}
    save_checkpoint(tmp_path / "toy.tar", other)
    with pytest.raises(WeightsError, match="toy.tar: a training checkpoint of dense model 'dense"):
        tiepoint.Matcher("dkm", device="cpu", weights=tmp_path / "toy.tar")
    # plain weights (no stored config) go into the pipeline's own architecture: they do not fit
    torch.save(trained_state_plain(checkpoint[1]), tmp_path / "plain.pth")
    with pytest.raises(WeightsError, match="plain.pth: weights do not fit this DKM"):
        tiepoint.Matcher("dkm", device="cpu", weights=tmp_path / "plain.pth")
    # ... and load when the pipeline names that architecture
    small = {k: v for k, v in TRAINED.items() if k != "pretrained"}
    m = tiepoint.Matcher({"dense": small}, device="cpu", weights=tmp_path / "plain.pth")
    assert torch.equal(m.dense.decoder.proj["16"].weight, checkpoint[1].decoder.proj["16"].weight)


def trained_state_plain(model: DKM) -> dict:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_rebuild_for_resuming_keeps_the_trained_config():
    conf = DKM.conf_from_checkpoint({**TRAINED, "symmetric": False, "trainable": True})
    assert conf.symmetric is False and conf.pretrained is False and conf.encoder == "resnet18"


def test_resnet18_matches_torchvisions_size_and_pyramid():
    from tiepoint.models.backbones.resnet import ResNet18

    net = ResNet18()
    # torchvision's resnet18: 11,689,512 parameters, 102 state tensors besides the BN counters
    assert sum(p.numel() for p in net.parameters()) == 11_689_512
    keys = [k for k in net.state_dict() if not k.endswith("num_batches_tracked")]
    assert len(keys) == 102 and "layer2.0.downsample.0.weight" in keys
    assert "layer1.0.downsample.0.weight" not in keys  # no shape change in layer1
    f = ResNet18(with_fc=False).features(torch.rand(1, 3, 64, 96))
    assert {s: tuple(v.shape[1:]) for s, v in f.items()} == {
        s: (c, 64 // s, 96 // s) for s, c in ResNet18.channels().items()
    }


def test_xfeat_encoder_is_the_frozen_pretrained_xfeat(official_weights):
    official_weights("xfeat")
    from tiepoint.errors import ConfigError
    from tiepoint.models.extractors.xfeat import XFeat

    conf = {**TRAINED, "encoder": "xfeat", "resize": [64, 96]}
    m = DKM(conf).train()
    assert not any(p.requires_grad for p in m.encoder.parameters())
    assert all(p.requires_grad for p in m.decoder.parameters())
    assert not m.encoder.training and m.decoder.training  # BN statistics stay XFeat's
    ref = XFeat({"max_num_keypoints": 16}).net.state_dict()
    for k, v in m.encoder.net.net.state_dict().items():
        assert torch.equal(v, ref[k]), k
    # its stride-8 features are XFeat's descriptors map (before normalisation)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        feats = m.encoder.net.features(x, rgb=x)
        desc, _, _ = XFeat({"max_num_keypoints": 16}).net(
            torch.nn.functional.instance_norm(x.mean(1, keepdim=True))
        )
    assert torch.allclose(feats[8], desc, atol=1e-5)
    assert feats[32].shape == (1, 64, 2, 3)
    with pytest.raises(ConfigError, match="xfeat encoder needs resize divisible by 32"):
        DKM({**conf, "resize": [60, 96]})


def test_weight_names_list_what_building_loads():
    assert DKM.weight_names({"encoder": "xfeat", "pretrained": False}) == ["xfeat"]
    assert DKM.weight_names({"encoder": "xfeat"}) == ["dkmv3_outdoor", "xfeat"]
    assert DKM.weight_names({"preset": "indoor"}) == ["dkmv3_indoor"]
    assert DKM.weight_names(TRAINED) == []
