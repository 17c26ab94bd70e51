"""Experiment assembly: the config (defaults, presets, strict validation), where experiments live,
and how a finished experiment or checkpoint is found and rebuilt.

An experiment config has four sections:
    data:   a dataset config (`datasets.get_dataset`), e.g. {name: homographies, data_dir: ...}
    model:  a TwoViewPipeline config {extractor: {...}, matcher: {...}, ground_truth: {...}}
            (a matcher on a frozen extractor), or a DenseTwoViewPipeline config
            {dense: {...}, loss: {...}} (a dense matcher such as DKM) — never both
    train:  DEFAULT_TRAIN_CONF below
    benchmarks: optional {<benchmark>: {preprocessing: ..., overrides: [...]}} for --run-benchmarks
            (a dense model: also `pipeline`, the dense pipeline to evaluate it in; see
            evaluation.training_hook)
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from ..atomic import atomic_write_text
from ..config import load_preset, merge_strict
from ..errors import ConfigError, WeightsError
from . import checkpoints as ckpt_lib

logger = logging.getLogger("tiepoint")

DEFAULT_TRAIN_CONF = {
    "seed": 0,
    "epochs": 1,
    "max_iterations": None,  # stop after this many optimizer steps in total
    "max_minutes": None,  # stop (validate, checkpoint) after this much wall-clock time in this run
    "optimizer": "adam",  # adam | adamw | sgd | rmsprop
    "optimizer_options": {},
    "opt_regexp": None,  # train only parameters whose name matches
    "lr": 1e-4,
    "param_groups": None,  # [{regexp: <param name regexp>, lr: ..., ...}]: per-module options
    "lr_schedule": {
        "type": None,  # null | exp | step | cosine | multistep
        "on_epoch": True,  # counter advances per epoch (else per iteration)
        "start": 0,
        "exp_div_10": 10,
        "step_size": 1,
        "gamma": 0.1,
        "milestones": None,  # multistep: counts, or fractions (< 1) of `total`
        "min_factor": 0.0,
        "total": None,
        "warmup": 0,
    },
    "clip_grad": None,  # max gradient norm
    "mixed_precision": None,  # null | float16 | bfloat16
    "device": None,  # default: cuda if available
    "eval_every_iter": 500,
    "eval_at_start": True,  # a step-0 validation gives the curves their starting point
    "val_max_batches": None,
    "save_every_iter": 1000,
    "log_every_iter": 20,
    "keep_last_checkpoints": 5,
    "best_key": "loss/total",
    "best_mode": "min",  # min | max
    "load_experiment": None,  # experiment name, checkpoint path or official weights name
    "feature_cache": {
        "enabled": False,
        "path": None,
        "num_epochs": 1,
        "batch_size": 8,
    },  # path: folder
    "num_workers": None,  # overrides data.num_workers when set
    "find_unused_parameters": False,  # DDP: set when some trainable parameters get no gradient
}
EXPERIMENT_DEFAULTS = {
    "data": None,
    "data_val": None,
    "model": None,
    "train": DEFAULT_TRAIN_CONF,
    "benchmarks": None,
}


def training_root(output_dir: str | os.PathLike | None = None) -> Path:
    """`<outputs>/training`, where <outputs> is `output_dir`, $TIEPOINT_OUTPUTS or ./outputs."""
    return Path(output_dir or os.environ.get("TIEPOINT_OUTPUTS") or "outputs") / "training"


def build_conf(
    conf: str | os.PathLike | dict | DictConfig | None,
    overrides: DictConfig | dict | None = None,
    base: DictConfig | dict | None = None,
) -> DictConfig:
    """Experiment config = defaults ⊕ (saved config) ⊕ preset/YAML ⊕ dotted overrides, strictly."""
    if isinstance(conf, (str, os.PathLike)):
        conf = load_preset("training", str(conf))
    # data/model sections are checked against their classes' defaults (better "did you mean" hints)
    merged = OmegaConf.merge(*(c for c in (base, conf, overrides) if c is not None))
    out = merge_strict(EXPERIMENT_DEFAULTS, merged, where="training config")
    validate_conf(out)
    return out


def pipeline_class(model_conf) -> type:
    """The training pipeline for a `model` section: dense (`model.dense`) or sparse."""
    from ..models.dense_two_view_pipeline import DenseTwoViewPipeline
    from ..models.two_view_pipeline import TwoViewPipeline

    if not model_conf.get("dense"):
        return TwoViewPipeline
    sparse = [k for k in ("extractor", "matcher") if model_conf.get(k)]
    if sparse:
        raise ConfigError(
            f"model has both dense and {' and '.join(sparse)}: a model is either "
            "extractor + matcher or dense"
        )
    return DenseTwoViewPipeline


def validate_conf(conf: DictConfig) -> None:
    """Check every section against its class defaults before anything heavy starts."""
    from ..datasets import dataset_class
    from ..models import model_class

    if not conf.data:
        raise ConfigError("training config has no data section")
    if not conf.model:
        raise ConfigError("training config has no model section")
    for section in ("data", "data_val"):
        if conf[section]:
            cls = dataset_class(conf[section].get("name"))
            merge_strict(cls.full_default_conf(), conf[section], where=section)
    pipeline = pipeline_class(conf.model)
    merge_strict(pipeline.full_default_conf(), conf.model, where="model")
    for kind in ("extractor", "matcher", "dense"):
        sub = conf.model.get(kind)
        if sub:
            cls = model_class(kind, sub.get("name"))
            cls.build_conf(sub, where=f"model.{kind}")  # presets (e.g. `features`) included
    if pipeline.trained == "dense" and conf.train.feature_cache.enabled:
        raise ConfigError(
            "train.feature_cache: a dense model reads images, not cached features; "
            "set train.feature_cache.enabled=false"
        )
    if conf.train.best_mode not in ("min", "max"):
        raise ConfigError(f"train.best_mode must be min or max, not '{conf.train.best_mode}'")


def prepare_experiment(exp_dir: Path, conf, overrides, restore: bool) -> DictConfig:
    """The config of a new run (refusing to overwrite one) or of a resumed one (its saved config
    ⊕ `conf` ⊕ `overrides`), written to `exp_dir/config.yaml`."""
    saved = exp_dir / "config.yaml"
    if restore:
        if not saved.exists():
            raise ConfigError(f"--restore: {saved} does not exist (nothing to resume)")
        conf = build_conf(conf, overrides, base=OmegaConf.load(saved))
    else:
        if conf is None:
            raise ConfigError("--conf is required (a packaged training preset or a YAML file)")
        if ckpt_lib.list_checkpoints(exp_dir) or (exp_dir / "checkpoint_best.tar").exists():
            raise ConfigError(
                f"experiment {exp_dir} already has checkpoints: use --restore or another name"
            )
        conf = build_conf(conf, overrides)
    exp_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, OmegaConf.to_yaml(conf))
    return conf


def resolve_experiment(spec: str, root: Path) -> Path:
    """An experiment name (its best, else latest checkpoint) or a checkpoint file."""
    p = Path(spec)
    if p.suffix in (".tar", ".pth", ".pt") and p.exists():
        return p
    d = p if p.is_dir() else root / spec
    if not d.is_dir():
        raise WeightsError(
            f"train.load_experiment: no experiment or checkpoint '{spec}' (looked in {root})"
        )
    best = d / "checkpoint_best.tar"
    found = best if best.exists() else ckpt_lib.latest_checkpoint(d)
    if found is None:
        raise WeightsError(f"train.load_experiment: experiment {d} has no checkpoint")
    return found


def rebuild_conf(kind: str, conf):
    """The config of a trained `kind` submodule (matcher or dense) rebuilt from a checkpoint by
    its class's rule (`FeatureMatcher` / `DenseMatcher.conf_from_checkpoint`)."""
    from ..models import model_class

    return model_class(kind, conf.name).conf_from_checkpoint(conf)


def load_initial_weights(model: torch.nn.Module, spec: str, root: Path) -> None:
    """`train.load_experiment`: official weights by name, an experiment under `root`, or a file;
    loaded into the trained submodule (`model.trained`: matcher or dense)."""
    from .. import weights as weights_lib

    kind = model.trained
    if spec in weights_lib.WEIGHTS:  # official weights by name, through the model's own loader
        sub = getattr(model, kind)
        load = getattr(sub, "load_weights", None) or getattr(sub, "load_checkpoint", None)
        if load is None:
            raise WeightsError(f"{type(sub).__name__} cannot load official weights ('{spec}')")
        load(spec)
        logger.info("%s initialised from official weights %s", kind, spec)
        return
    path = resolve_experiment(spec, root)
    ckpt_lib.load_matcher_checkpoint(model, path)
    logger.info("%s initialised from %s", kind, path)


def load_experiment(spec: str, overrides: dict | None = None, output_dir=None):
    """Rebuild a trained pipeline (TwoViewPipeline or DenseTwoViewPipeline) from its checkpoint
    (its stored config ⊕ `overrides`), in eval mode."""
    path = resolve_experiment(spec, training_root(output_dir))
    ck = ckpt_lib.load_checkpoint(path)
    mconf = OmegaConf.merge(ck["conf"]["model"], overrides or {})
    pipeline = pipeline_class(mconf)
    kind = pipeline.trained
    mconf[kind] = rebuild_conf(kind, mconf[kind])
    model = pipeline(mconf)
    ckpt_lib.check_compatible(model.state_dict(), ck["model"], str(path), prefix=kind)
    model.load_state_dict(ck["model"], strict=False)
    return model.eval()
