"""Optimizers and learning-rate schedules from the `train` config.

A schedule is a multiplier of the base lr as a function of a counter that advances per epoch
(`on_epoch: true`, the Glue Factory recipe) or per iteration. It is a LambdaLR built from the
config, so a checkpoint only needs the counter (the scheduler's state dict) to resume exactly.
The factor applies to every parameter group: `train.param_groups` ([{regexp, lr, ...options}],
first match wins, the rest gets `train.lr`) gives modules their own base lr — e.g. DKM trains its
pretrained encoder 20× slower than its decoder.
- `null`: constant;
- `exp`: constant until `start`, then ×10^(−1/exp_div_10) per unit (÷10 every `exp_div_10` units);
- `step`: ×`gamma` every `step_size` units after `start`;
- `cosine`: from 1 at `start` down to `min_factor` at `total` units (default: the whole run);
- `multistep`: ×`gamma` at each of `milestones` (counts; an entry below 1 is a fraction of
  `total`, e.g. DKM's [0.6667, 0.9]);
- `warmup`: linear ramp over the first `warmup` units, combined with any of the above.
"""

from __future__ import annotations

import math
import re

import torch
from omegaconf import DictConfig

from ..config import lookup
from ..errors import ConfigError

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "sgd": torch.optim.SGD,
    "rmsprop": torch.optim.RMSprop,
}
SCHEDULES = (None, "exp", "step", "cosine", "multistep")


def build_optimizer(model: torch.nn.Module, conf: DictConfig) -> torch.optim.Optimizer:
    """Optimizer over the trainable parameters (optionally only those matching `opt_regexp`)."""
    name = str(conf.optimizer).lower()
    lookup(OPTIMIZERS, name, "train.optimizer")
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if conf.get("opt_regexp"):
        rx = re.compile(conf.opt_regexp)
        params = [(n, p) for n, p in params if rx.search(n)]
    if not params:
        raise ConfigError(
            "no trainable parameters (check train.opt_regexp and the model's trainable flags)"
        )
    options = dict(conf.get("optimizer_options") or {})
    return OPTIMIZERS[name](param_groups(params, conf), lr=conf.lr, **options)


def param_groups(params: list, conf: DictConfig) -> list[dict]:
    """(name, parameter) pairs → optimizer groups by `train.param_groups` (first regexp that
    matches the name wins; a group's other keys, e.g. lr or weight_decay, override the defaults);
    unmatched parameters form a last group with the base options."""
    specs = list(conf.get("param_groups") or [])
    groups: list[dict] = []
    rest = list(params)
    for k, spec in enumerate(specs):
        spec = dict(spec)
        if not spec.get("regexp"):
            raise ConfigError(f"train.param_groups[{k}] has no regexp")
        rx = re.compile(spec.pop("regexp"))
        mine = [p for n, p in rest if rx.search(n)]
        if not mine:
            raise ConfigError(
                f"train.param_groups[{k}]: regexp '{rx.pattern}' matches no trainable parameter"
            )
        rest = [(n, p) for n, p in rest if not rx.search(n)]
        groups.append({"params": mine, **spec})
    if rest:
        groups.append({"params": [p for _, p in rest]})
    return groups


def lr_factor(conf: DictConfig, total: int):
    """The multiplier function of the counter for `conf` (the `lr_schedule` section)."""
    kind = conf.get("type")
    lookup(SCHEDULES, kind, "train.lr_schedule.type")
    start = int(conf.get("start", 0) or 0)
    warmup = int(conf.get("warmup", 0) or 0)
    div10 = float(conf.get("exp_div_10", 10) or 10)
    step_size = max(1, int(conf.get("step_size", 1) or 1))
    gamma = float(conf.get("gamma", 0.1))
    min_factor = float(conf.get("min_factor", 0.0))
    end = int(conf.get("total") or total)
    milestones = sorted(
        m * end if m < 1 else m for m in (float(x) for x in conf.get("milestones") or [])
    )

    def f(n: int) -> float:
        w = min(1.0, (n + 1) / warmup) if warmup > 0 else 1.0
        if kind is None or n < start:
            return w
        k = n - start
        if kind == "exp":
            return w * 10 ** (-k / div10)
        if kind == "step":
            return w * gamma ** (k // step_size)
        if kind == "multistep":
            return w * gamma ** sum(k >= m for m in milestones)
        span = max(1, end - start)
        return w * (
            min_factor + (1 - min_factor) * 0.5 * (1 + math.cos(math.pi * min(k, span) / span))
        )

    return f


def build_scheduler(optimizer, conf: DictConfig, epochs: int, iters_per_epoch: int):
    sched = conf.get("lr_schedule") or {}
    total = epochs if sched.get("on_epoch", True) else epochs * iters_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(sched, total))
