"""Training checkpoints: atomic writes, pruning, discovery, the trainer state they capture and
restore, and architecture checks on load.

Layout of `checkpoint_<epoch>_<step>[_interrupted].tar` and `checkpoint_best.tar` (plain torch.save,
loadable with `weights_only=True` — no pickled objects):
    model         the trained submodule's state dict: keys prefixed `matcher.` (the frozen
                  extractor is not saved: it is rebuilt from `conf.model.extractor`), or `dense.`
                  for a dense model (DenseTwoViewPipeline)
    conf          the resolved experiment config as plain dicts (`conf["model"]["matcher"]` or
                  `["dense"]` builds the model that the weights fit)
    optimizer, lr_scheduler, scaler   states for exact resumption
    epoch, iter   position: the next iteration is `iter` of epoch `epoch`
    step          global number of optimizer steps taken
    best, eval    best validation value so far, last validation metrics
    rng           torch / numpy / python generator states
So a checkpoint is directly usable for matching: `Matcher(pipeline, weights=path)` keeps the
`matcher.` (or `dense.`) keys.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, ListConfig

from ..atomic import atomic_path
from ..config import conf_diff, to_container
from ..errors import TiepointError, WeightsError
from ..weights import load_torch

_NAME = re.compile(r"^checkpoint_(\d+)_(\d+)(_interrupted)?\.tar$")


def save_checkpoint(path: Path, state: dict) -> Path:
    """torch.save through `atomic_path` (fsynced before the rename): never half a checkpoint."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    return path


def list_checkpoints(exp_dir: Path) -> list[tuple[int, Path]]:
    """Numbered checkpoints of an experiment as (step, path), oldest first."""
    found = []
    for p in Path(exp_dir).glob("checkpoint_*.tar"):
        m = _NAME.match(p.name)
        if m:
            found.append((int(m.group(2)), p))
    return sorted(found)


def latest_checkpoint(exp_dir: Path) -> Path | None:
    ckpts = list_checkpoints(exp_dir)
    if ckpts:
        return ckpts[-1][1]
    best = Path(exp_dir) / "checkpoint_best.tar"
    return best if best.exists() else None


def prune_checkpoints(exp_dir: Path, keep: int) -> None:
    """Delete all but the `keep` most recent numbered checkpoints (never the best one)."""
    if keep is None or keep <= 0:
        return
    for _, p in list_checkpoints(exp_dir)[:-keep]:
        p.unlink(missing_ok=True)


def load_checkpoint(path: Path) -> dict:
    ckpt = load_torch(path, "checkpoint")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise WeightsError(f"{path}: not a tiepoint training checkpoint (no 'model' entry)")
    return ckpt


def trained_state(model: torch.nn.Module) -> dict:
    """The trained part of a pipeline's state dict: keys `<model.trained>.*` (matcher or dense)."""
    prefix = f"{model.trained}."
    return {k: v.detach().cpu() for k, v in model.state_dict().items() if k.startswith(prefix)}


matcher_state = trained_state  # the name before dense models


# settings that do not change which weights fit a matcher or dense model
_NOT_ARCHITECTURE = (
    "weights",
    "pretrained",
    "trainable",
    "loss",
    "filter_threshold",
    "depth_confidence",
    "width_confidence",
    "num_matches",
    "sample_mode",
    "sample_thresh",
    "symmetric",
)


def check_compatible(
    model_state: dict,
    state: dict,
    source: str,
    ckpt_conf: dict | None = None,
    model_conf: dict | None = None,
    prefix: str = "matcher",
) -> None:
    """Raise a one-line WeightsError naming what differs when `state` does not fit the model's
    `prefix` submodule (matcher or dense)."""
    own = {k: v for k, v in model_state.items() if k.startswith(f"{prefix}.")}
    theirs = {k: v for k, v in state.items() if k.startswith(f"{prefix}.")}
    if not theirs:
        other = sorted({k.split(".", 1)[0] for k in state})
        raise WeightsError(
            f"{source}: checkpoint has no {prefix} weights (keys '{prefix}.*'; it has "
            f"{', '.join(f'{o}.*' for o in other) or 'none'})"
        )
    missing = sorted(set(own) - set(theirs))
    unexpected = sorted(set(theirs) - set(own))
    wrong = sorted(k for k in set(own) & set(theirs) if own[k].shape != theirs[k].shape)
    if not (missing or unexpected or wrong):
        return
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(
            f"{len(wrong)} shape mismatches (e.g. {k}: checkpoint {tuple(theirs[k].shape)} "
            f"vs model {tuple(own[k].shape)})"
        )
    if missing:
        parts.append(f"{len(missing)} parameters missing from the checkpoint (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected parameters (e.g. {unexpected[0]})")
    msg = f"{source}: checkpoint is for a different {prefix} architecture: " + "; ".join(parts)
    if ckpt_conf is not None and model_conf is not None:
        diff = conf_diff(ckpt_conf, model_conf, skip=_NOT_ARCHITECTURE)
        if diff:
            msg += f" — {prefix} config differs (checkpoint → model): " + ", ".join(diff[:5])
    raise WeightsError(msg)


def rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            *[float(x) if isinstance(x, float) else int(x) for x in np_state[2:]],
        ],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), int(n[2]), int(n[3]), float(n[4])))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def training_state(
    model, conf, optimizer, scheduler, scaler, epoch: int, it: int, step: int, best, last_eval
) -> dict:
    """Everything a checkpoint holds (layout in the module docstring)."""
    return {
        "model": trained_state(model),
        "conf": to_container(conf),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "epoch": epoch,
        "iter": it,
        "step": step,
        "best": best,
        "eval": last_eval,
        "rng": rng_state(),
        "tiepoint_checkpoint": 1,
    }


def load_matcher_checkpoint(
    model: torch.nn.Module, path: Path, sub_conf: dict | None = None
) -> dict:
    """Load a checkpoint's weights of the trained submodule (`model.trained`: matcher or dense)
    into `model` after checking the architectures agree; returns the whole checkpoint.

    A mismatch is reported with the differences between the two configs with their class
    defaults filled in (`sub_conf`: the model's side; default: the built submodule's config).
    """
    kind = model.trained
    sub = getattr(model, kind)
    ck = load_checkpoint(path)
    theirs = (ck.get("conf") or {}).get("model", {}).get(kind)
    if theirs:
        with contextlib.suppress(TiepointError):  # another class's config: compared as stored
            theirs = to_container(type(sub).build_conf(theirs))
    check_compatible(
        model.state_dict(),
        ck["model"],
        str(path),
        theirs,
        to_container(sub.conf) if sub_conf is None else sub_conf,
        prefix=kind,
    )
    model.load_state_dict(ck["model"], strict=False)
    return ck


def restore_optimization(ck: dict, optimizer, scheduler, scaler) -> None:
    """Optimizer, LR scheduler and (when both sides have one) gradient-scaler states."""
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["lr_scheduler"])
    if scaler is not None and ck.get("scaler"):
        scaler.load_state_dict(ck["scaler"])


def matcher_overrides(path: str | os.PathLike) -> list[str]:
    """Dotted pipeline overrides that rebuild the matcher a checkpoint was trained with.

    `Matcher("aliked+lightglue", weights=ckpt, overrides=matcher_overrides(ckpt))` then matches with
    the trained weights even when the architecture differs from the preset's (e.g. fewer layers);
    which settings carry over is the matcher class's rule (`conf_from_checkpoint`).
    """
    from ..models import model_class

    trained = (load_checkpoint(Path(path)).get("conf") or {}).get("model", {}).get("matcher") or {}
    if not trained.get("name"):
        raise WeightsError(f"{path}: checkpoint has no matcher config (conf.model.matcher.name)")
    name = str(trained["name"]).removeprefix("matchers.")
    conf = model_class("matcher", name).conf_from_checkpoint({**trained, "name": name}, {})
    return [
        f"matcher.{k}={'null' if v is None else v}"
        for k, v in conf.items()
        if not isinstance(v, (dict, list, DictConfig, ListConfig))
    ]
