"""Per-module learning rates (`train.param_groups`) and the multistep schedule (DKM's recipe)."""

import pytest
import torch
from omegaconf import OmegaConf

from tiepoint.config import merge_strict
from tiepoint.errors import ConfigError
from tiepoint.training.experiment import DEFAULT_TRAIN_CONF
from tiepoint.training.schedules import build_optimizer, build_scheduler, lr_factor


class EncDec(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Linear(3, 4)
        self.decoder = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))


def dkm_train_conf(**extra):
    return merge_strict(
        DEFAULT_TRAIN_CONF,
        {
            "optimizer": "adamw",
            "optimizer_options": {"weight_decay": 0.01},
            "lr": 1e-4,
            "param_groups": [{"regexp": r"(^|\.)encoder\.", "lr": 5e-6}],
            "lr_schedule": {
                "type": "multistep",
                "on_epoch": False,
                "milestones": [2 / 3, 0.9],
                "gamma": 0.2,
            },
            **extra,
        },
        where="train",
    )


def test_param_groups_give_modules_their_own_lr():
    model = EncDec()
    opt = build_optimizer(model, dkm_train_conf())
    assert isinstance(opt, torch.optim.AdamW) and len(opt.param_groups) == 2
    enc, dec = opt.param_groups
    assert {id(p) for p in enc["params"]} == {id(p) for p in model.encoder.parameters()}
    assert {id(p) for p in dec["params"]} == {id(p) for p in model.decoder.parameters()}
    assert enc["lr"] == 5e-6 and dec["lr"] == 1e-4
    assert enc["weight_decay"] == dec["weight_decay"] == 0.01
    no_match = dkm_train_conf(param_groups=[{"regexp": "backbone", "lr": 1e-5}])
    with pytest.raises(ConfigError, match="matches no trainable parameter"):
        build_optimizer(model, no_match)


def test_multistep_schedule_scales_every_group():
    # DKM: N steps, ×0.2 at 2N/3 and 9N/10 (N = 30 here: milestones at steps 20 and 27)
    model = EncDec()
    conf = dkm_train_conf()
    opt = build_optimizer(model, conf)
    sched = build_scheduler(opt, conf, epochs=3, iters_per_epoch=10)
    lrs = []
    for _ in range(30):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert lrs[19] == pytest.approx([5e-6, 1e-4])
    assert lrs[20] == pytest.approx([5e-6 * 0.2, 1e-4 * 0.2])
    assert lrs[26] == pytest.approx([5e-6 * 0.2, 1e-4 * 0.2])
    assert lrs[27] == pytest.approx([5e-6 * 0.04, 1e-4 * 0.04])
    # absolute milestones, and an explicit total for fractions
    f = lr_factor(OmegaConf.create({"type": "multistep", "milestones": [5, 0.5], "total": 40}), 9)
    assert [f(n) for n in (4, 5, 19, 20)] == pytest.approx([1, 0.1, 0.1, 0.01])
