"""GIM's released models load strictly from checkpoints written in GIM's exact layout
(`GIM:demo.py`): a Lightning `state_dict` whose `superpoint.*` keys are SuperPoint's and whose
`model.*` keys are LightGlue's (gim_lightglue_100h.ckpt) or DKM's (gim_dkm_100h.ckpt, plus the
unused ResNet classifier `encoder.net.fc.*`)."""

from __future__ import annotations

import pytest
import torch

import tiepoint
from tiepoint import weights
from tiepoint.errors import WeightsError
from tiepoint.models.dense.dkm import DKM
from tiepoint.models.extractors.superpoint import SuperPointNet
from tiepoint.models.matchers.lightglue import LightGlue


def _random_state(module, seed):
    g = torch.Generator().manual_seed(seed)
    return {
        k: torch.randn(v.shape, generator=g)
        if v.is_floating_point()
        else torch.randint(0, 100, v.shape, generator=g, dtype=v.dtype)
        for k, v in module.state_dict().items()
    }


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("TIEPOINT_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TIEPOINT_OFFLINE", "1")
    (tmp_path / "home" / "weights").mkdir(parents=True)
    return tmp_path / "home"


def test_gim_lightglue_pipeline_loads_both_parts_of_one_checkpoint(home):
    sp = _random_state(SuperPointNet(256), 1)
    lg_model = LightGlue({"features": "superpoint", "pretrained": False})
    lg = {k: v for k, v in _random_state(lg_model, 2).items()}
    # GIM's LightGlue (glue-factory code) has the same names as ours for these keys
    state = {f"superpoint.{k}": v for k, v in sp.items()} | {f"model.{k}": v for k, v in lg.items()}
    torch.save(
        {"state_dict": state, "epoch": 49, "global_step": 1000},
        weights.cache_path("gim_lightglue_100h"),
    )
    m = tiepoint.Matcher("gim_lightglue", device="cpu")
    got_sp = m.extractor.net.state_dict()
    got_lg = m.matcher.state_dict()
    assert set(got_sp) == set(sp) and all(torch.equal(got_sp[k], sp[k]) for k in sp)
    assert set(lg) <= set(got_lg) and all(torch.equal(got_lg[k], lg[k]) for k in lg)
    assert m.conf.extractor.nms_radius == 3 and m.conf.extractor.max_num_keypoints == 2048
    assert m.conf.matcher.filter_threshold == 0.1
    # strict: a checkpoint missing a LightGlue key is a one-line error naming it
    del state["model.log_assignment.8.final_proj.weight"]
    torch.save({"state_dict": state}, weights.cache_path("gim_lightglue_100h"))
    with pytest.raises(WeightsError, match="log_assignment.8.final_proj.weight"):
        tiepoint.Matcher("gim_lightglue", device="cpu")


def test_gim_dkm_checkpoint_with_model_prefix_loads_strictly(home):
    conf = {
        "preset": "gim",
        "pretrained": False,
        "encoder": "resnet18",
        "proj_dim": 32,
        "gp_dim": 16,
        "dfn_dim": 32,
        "feat_dim": 16,
        "refiner_blocks": 1,
    }
    ref = DKM(conf)
    state = _random_state(ref, 3)
    ckpt = {f"model.{k}": v for k, v in state.items()}
    ckpt["model.encoder.net.fc.weight"] = torch.randn(1000, 512)  # GIM keeps the classifier
    ckpt["model.encoder.net.fc.bias"] = torch.randn(1000)
    path = home / "weights" / "gim_dkm_100h.ckpt"
    torch.save({"state_dict": ckpt, "epoch": 9}, path)
    model = DKM({**conf, "pretrained": True})  # the preset's gim_dkm_100h, from the cache
    got = model.state_dict()
    assert all(torch.equal(got[k], state[k]) for k in state)
    missing = sorted(k for k in ckpt if k.startswith("model.decoder."))[0]
    del ckpt[missing]
    torch.save({"state_dict": ckpt}, path)
    with pytest.raises(WeightsError, match=missing.removeprefix("model.")):
        DKM({**conf, "pretrained": True})
