"""`tiepoint train --run-benchmarks`: evaluate a training checkpoint on the experiment's
`benchmarks` section. It lives on the evaluation side so that `training/` never imports
`evaluation/`; the CLI hands it to the trainer (`train(..., benchmark_hook=run_benchmarks)`)."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from ..config import to_container
from ..errors import TiepointError
from ..models import model_class
from . import runner

logger = logging.getLogger("tiepoint")


def run_benchmarks(
    conf: DictConfig, checkpoint: Path, exp_dir: Path, epoch: int, device
) -> dict[str, float]:
    """Run each benchmark of `conf.benchmarks` with the checkpoint's matcher; results go to
    `<outputs>/results/<benchmark>/<experiment>/<epoch>/`. Returns the finite summary numbers as
    `<benchmark>/<key>` (a failing benchmark is logged and skipped)."""
    scalars: dict[str, float] = {}
    for name, bconf in (conf.benchmarks or {}).items():
        bconf = bconf or {}
        matcher_cls = model_class("matcher", conf.model.matcher.name)
        matcher = to_container(matcher_cls.conf_from_checkpoint(conf.model.matcher))
        pipeline = {
            "preprocessing": to_container(bconf.get("preprocessing")) or {"resize": 1024},
            "extractor": to_container(bconf.get("extractor")) or to_container(conf.model.extractor),
            "matcher": matcher,
        }
        try:
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
