"""The GIM presets run in the existing trainer on propagated video labels (`video_labels`).
Slow (two short trainer runs)."""

from __future__ import annotations

import json

import pytest
import torch
from omegaconf import OmegaConf

from tests.video.synthetic_labels import Scene, render_frames, write_gim_labels
from tiepoint.config import parse_dotlist
from tiepoint.training import train
from tiepoint.training.checkpoints import list_checkpoints, load_checkpoint
from tiepoint.video.propagate import propagate_video
from tiepoint.weights import load_state_dict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    """Two videos' propagated labels (GIM layout) and frame caches."""
    root = tmp_path_factory.mktemp("walk")
    for k, v in enumerate(("walk a", "walk b")):
        write_gim_labels(root / "pseudo", Scene(methods=("SIFT",), seed=k), v, 81, resizes=("F",))
        render_frames(root / "frames" / v, frames=81, seed=k)
        s = propagate_video(root / "pseudo", v, root / "prop", max_samples=2)
    return s["folder"].parent, root / "frames"


def common(walk, steps):
    prop, frames = walk
    return [
        f"data.propagate_dir={prop}",
        f"data.frames_dir={frames}",
        "data.val_videos=[walk b]",
        "data.img_size=[320,240]",
        "data.batch_size=1",
        "data.num_workers=0",
        f"train.max_iterations={steps}",
        "train.eval_every_iter=0",
        "train.eval_at_start=true",
        "train.save_every_iter=0",
    ]


def test_gim_lightglue_preset_trains_on_video_labels(walk, tmp_path):
    over = common(walk, 1) + [
        "model.extractor={name: aliked, model_name: aliked-n16, max_num_keypoints: 64,"
        " detection_threshold: -1}",
        "model.num_keypoints=64",
        "model.matcher.features=aliked",
        "model.matcher.weights=aliked_lightglue",
        "train.lr=1e-3",
    ]
    exp = train("gim_lg", "gim_lightglue", parse_dotlist(over), output_dir=tmp_path, progress=False)
    conf = OmegaConf.load(exp / "config.yaml")
    assert conf.data.name == "video_labels" and conf.train.best_key == "label_recall"
    ckpt = load_checkpoint(list_checkpoints(exp)[-1][1])
    official = load_state_dict("aliked_lightglue")
    key = "log_assignment.8.final_proj.weight"
    trained = {k.removeprefix("matcher."): v for k, v in ckpt["model"].items()}
    assert not torch.equal(trained[key], official[key])  # the diagonal loss moved the weights
    hist = json.loads((exp / "val_history.json").read_text())
    assert "label_recall" in json.dumps(hist) and "loss/total" in json.dumps(hist)


def test_gim_dkm_preset_trains_on_video_labels(walk, tmp_path):
    over = common(walk, 1) + [
        "model.dense={name: dkm, preset: gim, pretrained: false, encoder: resnet18,"
        " resize: [64, 64], upsample_res: null, proj_dim: 32, gp_dim: 16, dfn_dim: 32,"
        " feat_dim: 16, refiner_blocks: 1}",
    ]
    exp = train("gim_dkm", "gim_dkm", parse_dotlist(over), output_dir=tmp_path, progress=False)
    assert OmegaConf.load(exp / "config.yaml").model.dense.preset == "gim"
    hist = json.dumps(json.loads((exp / "val_history.json").read_text()))
    assert "zs_epe_1" in hist and "epe" in hist
