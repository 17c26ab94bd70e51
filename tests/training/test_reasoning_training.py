"""Training the Descriptor Reasoning head in the trainer: frozen XFeat + a small random frozen ViT
of DINOv2's interface (`vit_tiny14`), homography pairs cut from real photographs."""

import shutil

import pytest
import torch
from helpers import resume_and_compare
from omegaconf import OmegaConf

from tiepoint.datasets import get_dataset
from tiepoint.datasets.base import collate
from tiepoint.models.matchers.reasoning import gt_pairs_nearest
from tiepoint.models.two_view_pipeline import TwoViewPipeline
from tiepoint.training import build_conf
from tiepoint.training.trainer import Trainer

TINY_REASONING = {
    "name": "reasoning",
    "features": "xfeat",
    "pretrained": False,
    "semantic_backbone": "vit_tiny14",
    "dino_weights": None,
    "features_dim": 32,
    "layers": 2,
    "long_side": 112,
}


@pytest.fixture(scope="module")
def photos(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("photos")
    for seq in ("oxford_boat", "oxford_leuven"):
        for i in (1, 3):
            shutil.copy(data_dir / "homography" / seq / f"img{i}.png", out / f"{seq}_{i}.png")
    return out


def conf(photos, **train):
    return OmegaConf.create(
        {
            "data": {
                "name": "homographies",
                "data_dir": str(photos),
                "train_size": 8,
                "val_size": 2,
                "val_pairs": 2,
                "batch_size": 2,
                "homography": {"patch_shape": [160, 120], "difficulty": 0.3, "max_angle": 10},
            },
            "model": {
                "extractor": {"name": "xfeat", "max_num_keypoints": 64},
                "matcher": TINY_REASONING,
            },
            "train": {
                "epochs": 2,
                "lr": 1e-3,
                "eval_every_iter": 0,
                "eval_at_start": False,
                "save_every_iter": 0,
                "log_every_iter": 1,
                **train,
            },
        }
    )


def test_gt_pairs_nearest_is_the_3px_nearest_neighbour():
    proj = torch.tensor([[[10.0, 10.0], [50.0, 50.0], [float("nan"), 0.0], [20.0, 20.0]]])
    kp1 = torch.tensor([[[11.0, 10.0], [10.0, 12.5], [49.0, 54.0], [21.0, 21.0]]])
    mask0 = torch.tensor([[True, True, True, False]])
    (pairs,) = gt_pairs_nearest(proj, kp1, 3.0, mask0)
    # 0 → nearest is 1 px away (j=0); 1 → 4.1 px: none; 2: unknown; 3: padding
    assert pairs.tolist() == [[0, 0]]


def test_loss_decreases_on_a_fixed_batch(photos):
    torch.manual_seed(0)
    c = build_conf(conf(photos))
    model = TwoViewPipeline(c.model)
    ds = get_dataset(c.data).get_dataset("train")
    batch = collate([ds[0], ds[1]])
    # the frozen features once (as the feature cache does), then only the head trains
    feats = [model.extract(batch[f"view{i}"]) for i in (0, 1)]
    assert feats[0]["semantic"].shape == (2, 64, 192)
    data = {**batch, **{f"{k}{i}": v for i in (0, 1) for k, v in feats[i].items()}}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    assert all(not p.requires_grad for p in model.matcher.dino.parameters())
    losses = []
    for _ in range(10):
        pred = model(data)
        loss, _ = model.loss(pred, data)
        assert loss["total"].shape == (2,) and torch.isfinite(loss["total"]).all()
        assert (loss["num_gt"] > 10).all()  # real GT: XFeat repeats on these photos
        opt.zero_grad()
        loss["total"].mean().backward()
        opt.step()
        losses.append(float(loss["total"].detach().mean()))
    assert losses[-1] < 0.7 * losses[0] and losses[-1] == min(losses), losses
    # the refined descriptors match the pair: more GT-correct mutual NNs than at the start
    m0 = pred["matches0"]
    gt = gt_pairs_nearest(pred["gt_proj_0to1"], pred["keypoints1"], 3.0, pred["mask0"])
    correct = sum(int((m0[b, p[:, 0]] == p[:, 1]).sum()) for b, p in enumerate(gt))
    assert correct > 0


def test_trainer_with_feature_cache_resumes_exactly(photos, tmp_path):
    extra = {"feature_cache": {"enabled": True, "num_epochs": 1, "batch_size": 2}}
    full = Trainer(
        tmp_path / "full", build_conf(conf(photos, max_iterations=4, **extra)), progress=False
    )
    full.run()
    hist = dict(full.loss_history)
    assert all(torch.isfinite(torch.tensor(v)) for v in hist.values())
    c = build_conf(conf(photos, max_iterations=2, **extra))
    Trainer(tmp_path / "part", c, progress=False).run()
    resume_and_compare(tmp_path / "part", c, 2, 4, hist)


@pytest.mark.parametrize(
    "preset",
    [
        f"{x}+reasoning_{d}"
        for x, d in [
            ("xfeat", "homography"),
            ("xfeat", "scannet"),
            ("superpoint", "scannet"),
            ("aliked", "scannet"),
            ("alike", "scannet"),
            ("dedode", "scannet"),
        ]
    ],
)
def test_presets_are_valid(preset):
    c = build_conf(preset)  # strict merge against the dataset, pipeline and model defaults
    assert c.train.lr == 1e-4 and c.train.optimizer == "adam"
    assert c.model.matcher.name == "reasoning" and c.train.feature_cache.enabled
