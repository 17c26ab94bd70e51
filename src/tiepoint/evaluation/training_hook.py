"""`tiepoint train --run-benchmarks`: evaluate a training checkpoint on the experiment's
`benchmarks` section. It lives on the evaluation side so that `training/` never imports
`evaluation/`; the CLI hands it to the trainer (`train(..., benchmark_hook=run_benchmarks)`).

Each benchmark runs through `runner.run` with the checkpoint as `weights`, exactly as
`tiepoint eval <benchmark> --pipeline ... --weights <checkpoint>` would: a sparse checkpoint with
the experiment's extractor and the matcher config it stores; a dense one (DKM) in the benchmark's
`pipeline` (default: the packaged pipeline named after the dense model, e.g. `dkm`, else just its
`dense.name`), whose class rebuilds the trained architecture (`DenseMatcher.from_checkpoint`)
and keeps the pipeline's inference settings."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from ..config import packaged_names, to_container
from ..errors import ConfigError, TiepointError
from ..models import model_class
from . import runner

logger = logging.getLogger("tiepoint")


def run_benchmarks(
    conf: DictConfig, checkpoint: Path, exp_dir: Path, epoch: int, device
) -> dict[str, float]:
    """Run each benchmark of `conf.benchmarks` with the checkpoint's model; results go to
    `<outputs>/results/<benchmark>/<experiment>/<epoch>/`. Returns the finite summary numbers as
    `<benchmark>/<key>` (a failing benchmark is logged and skipped)."""
    scalars: dict[str, float] = {}
    for name, bconf in (conf.benchmarks or {}).items():
        bconf = bconf or {}
        try:
            pipeline = benchmark_pipeline(conf.model, bconf)
            summaries, out = runner.run(
                name,
                pipeline,
                tag=f"{exp_dir.name}/{epoch}",
                overwrite=True,
                weights=str(checkpoint),
                overrides=list(bconf.get("overrides") or []),
                estimator=bconf.get("estimator"),
                ransac_th=bconf.get("ransac_th"),
                device=device,
                progress=False,
                output_dir=exp_dir.parent.parent,
            )
        except TiepointError as e:
            logger.warning("benchmark %s failed: %s", name, e)
            continue
        for k, v in summaries.items():
            if isinstance(v, (int, float)) and v is not None and math.isfinite(v):
                scalars[f"{name}/{k}"] = v
        logger.info("benchmark %s (epoch %d) → %s", name, epoch, out)
    return scalars


def benchmark_pipeline(model: DictConfig, bconf) -> dict | str:
    """The pipeline a benchmark evaluates the checkpoint in (its weights come from the checkpoint).

    Sparse: the benchmark's (else the experiment's) extractor and the matcher as trained.
    Dense: the benchmark's `pipeline` (a packaged name, a YAML path or a dict with a `dense`
    section), else the packaged pipeline of the model's name, else `{dense: {name}}`; its `dense`
    section must name the trained class (its other keys are the inference settings)."""
    prep = to_container(bconf.get("preprocessing"))
    if not model.get("dense"):
        matcher_cls = model_class("matcher", model.matcher.name)
        return {
            "preprocessing": prep or {"resize": 1024},
            "extractor": to_container(bconf.get("extractor")) or to_container(model.extractor),
            "matcher": to_container(matcher_cls.conf_from_checkpoint(model.matcher)),
        }
    from ..api import pipeline_conf  # lazily, as runner does

    name = str(model.dense.name)
    pipeline = to_container(bconf.get("pipeline"))
    if pipeline is None:
        pipeline = name if name in packaged_names("pipelines") else {"dense": {"name": name}}
    resolved = pipeline_conf(pipeline, {"preprocessing": prep} if prep else None)
    if "dense" not in resolved:
        raise ConfigError(f"benchmark pipeline {pipeline!r} is not dense; the model trained is")
    if model_class("dense", resolved.dense.name) is not model_class("dense", name):
        raise ConfigError(
            f"benchmark pipeline {pipeline!r} runs dense model '{resolved.dense.name}', "
            f"not the trained '{name}'"
        )
    return pipeline if not prep else to_container(resolved)
