"""Which run is this, and may it reuse the files already in its results folder?

A run is a benchmark, a data config, a model (resolved pipeline config) and eval settings; it
lives in `<outputs>/results/<benchmark>/<tag>/conf.yaml`. Predictions depend only on
benchmark + data (less its root: moving the data is fine) + model, so a saved conf that differs
there is refused unless `overwrite`, and a sibling tag with the same ones lends its predictions.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ..atomic import atomic_path, atomic_write_text
from ..config import conf_diff, lookup, merge_strict, parse_dotlist, to_container
from ..errors import ConfigError, EstimatorError
from ..estimators import ESTIMATORS, POINT_LINE
from .benchmarks import Benchmark, get_benchmark

logger = logging.getLogger("tiepoint")

OUTPUTS_ENV = "TIEPOINT_OUTPUTS"
# eval settings every benchmark has; `store_dense`: keep a dense pipeline's warp and certainty in
# predictions.h5 (large; predictions exported without it are reused as they are)
EVAL_DEFAULTS = {"store_dense": False}


def outputs_root(output_dir: str | os.PathLike | None = None) -> Path:
    return Path(output_dir or os.environ.get(OUTPUTS_ENV, "outputs"))


def results_dir(benchmark: str, tag: str, output_dir=None) -> Path:
    return outputs_root(output_dir) / "results" / benchmark / tag


def parse_ransac_th(value):
    """`--ransac-th`: a threshold (px), -1 or `sweep` (0.5..3), `sweep6` (0.5..6 in 0.5 steps,
    Descriptor Reasoning's grid) or a comma-separated list; a list is swept (best mean AUC)."""
    from .metrics import SWEEP6_THRESHOLDS

    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    v = str(value).strip().lower()
    if v == "sweep":
        return -1.0
    if v == "sweep6":
        return list(SWEEP6_THRESHOLDS)
    try:
        out = [float(x) for x in v.split(",")]
    except ValueError:
        raise ConfigError(
            f"--ransac-th {value!r}: expected pixels, -1/sweep, sweep6 or a comma-separated list"
        ) from None
    return out[0] if len(out) == 1 else out


def default_tag(pipeline, estimator, ransac_th, overrides: Sequence[str], weights) -> str:
    tag = pipeline if isinstance(pipeline, str) else "custom"
    tag = Path(tag).stem if tag.endswith((".yaml", ".yml")) else tag
    if weights:
        tag += f"_{Path(str(weights)).stem}"
    if estimator:
        tag += f"_{estimator}"
    ransac_th = parse_ransac_th(ransac_th)
    if isinstance(ransac_th, list):
        tag += f"_sweep{min(ransac_th):g}-{max(ransac_th):g}"
    elif ransac_th is not None:
        tag += "_sweep" if float(ransac_th) < 0 else f"_th{float(ransac_th):g}"
    if overrides:
        tag += "_" + ":".join(overrides)
    return re.sub(r"[^A-Za-z0-9_.+:=@,-]", "-", tag)


@dataclass
class RunConf:
    benchmark: Benchmark
    data: dict
    model: dict
    eval: dict
    pipeline_overrides: list[str]

    def export_part(self) -> dict:
        """What the predictions depend on (the data root is not: moving the data is fine)."""
        data = {k: v for k, v in self.data.items() if k != "root"}
        return {"benchmark": self.benchmark.name, "data": data, "model": self.model}


def _saved_export_part(saved: dict) -> dict:
    """`RunConf.export_part` of a conf.yaml read back."""
    return {
        "benchmark": saved.get("benchmark"),
        "data": {k: v for k, v in (saved.get("data") or {}).items() if k != "root"},
        "model": saved.get("model"),
    }


def split_overrides(overrides: Iterable[str]) -> tuple[list[str], list[str], list[str]]:
    """`data.*`, `eval.*` and the rest (the pipeline's), each without its prefix."""
    data, ev, model = [], [], []
    for o in overrides or []:
        if "=" not in o:
            raise ConfigError(f"override '{o}' must look like key=value")
        if o.startswith("data."):
            data.append(o[len("data.") :])
        elif o.startswith("eval."):
            ev.append(o[len("eval.") :])
        else:
            model.append(o)
    return data, ev, model


def build_conf(
    benchmark: str,
    pipeline,
    estimator=None,
    ransac_th=None,
    overrides=(),
    data_root=None,
    weights=None,
) -> RunConf:
    from ..api import pipeline_conf

    data_ov, eval_ov, model_ov = split_overrides(overrides)
    data_conf = OmegaConf.merge(
        parse_dotlist(data_ov), {"root": str(data_root)} if data_root else {}
    )
    bench = get_benchmark(benchmark, data_conf)
    ev_ov = to_container(parse_dotlist(eval_ov))
    # estimator options are free-form (each backend checks its own): kept out of the strict merge
    options = {**bench.eval_conf.get("options", {}), **(ev_ov.pop("options", None) or {})}
    base = {**EVAL_DEFAULTS, **{k: v for k, v in bench.eval_conf.items() if k != "options"}}
    ev = to_container(merge_strict(base, ev_ov, where="eval"))
    ev["options"] = options
    if estimator is not None:
        ev["estimator"] = estimator
    ransac_th = parse_ransac_th(ransac_th)
    if ransac_th is not None:
        ev["ransac_th"] = ransac_th if isinstance(ransac_th, list) else float(ransac_th)
    lookup((*ESTIMATORS, POINT_LINE), ev["estimator"], "estimator", EstimatorError)
    th = ev["ransac_th"]
    bad = any(float(t) <= 0 for t in th) if isinstance(th, list) else th is not None and th == 0
    if bad:
        raise ConfigError("ransac_th must be > 0, or -1 for the standard sweep")
    # the benchmark protocol fixes the network input size; everything else is the pipeline's
    prep = {"preprocessing": {"resize": bench.conf.resize, "side": bench.conf.side}}
    model_conf = pipeline_conf(pipeline, OmegaConf.merge(parse_dotlist(model_ov), prep))
    if estimator is None and "estimator" not in ev_ov and _matches_lines(bench, model_conf):
        ev["estimator"] = POINT_LINE  # matched lines join the homography fit
    model = {
        "pipeline": pipeline if isinstance(pipeline, str) else "custom",
        **to_container(model_conf),
        "weights": str(weights) if weights else None,
    }
    return RunConf(bench, to_container(bench.conf), model, ev, model_ov)


def _matches_lines(bench: Benchmark, model_conf) -> bool:
    """A homography-only benchmark (`point_line` fits no pose) and a matcher that matches line
    segments (GlueStick)."""
    from ..models import model_class
    from .benchmarks import HOMOGRAPHY

    name = (model_conf.get("matcher") or {}).get("name")
    tasks = bench.conf.get("tasks") or bench.tasks  # `pairs` can be limited by data.tasks
    if set(tasks) != {HOMOGRAPHY} or not name:
        return False
    return bool(getattr(model_class("matcher", name), "matches_lines", False))


def _diff(a, b) -> str | None:
    """First differing key between two nested dicts, as 'key: old → new'."""
    return next(iter(conf_diff(a, b)), None)


def load_conf(path: Path) -> dict | None:
    if not path.exists():
        return None
    return OmegaConf.to_container(OmegaConf.load(path), resolve=True)


def check_or_reset(out: Path, conf: RunConf, overwrite: bool) -> None:
    """Refuse (or, with `overwrite`, delete) outputs of another data+model config in `out`."""
    saved = load_conf(out / "conf.yaml")
    if saved is None:
        return
    d = _diff(_saved_export_part(saved), conf.export_part())
    if d is None:
        return
    if not overwrite:
        raise ConfigError(
            f"{out} holds predictions of a different configuration ({d}); "
            "pass --overwrite to replace them or choose another --tag"
        )
    logger.info("overwriting %s (%s)", out, d)
    for name in ("predictions.h5", "results.h5", "summaries.json"):
        (out / name).unlink(missing_ok=True)


def reuse_sibling_predictions(out: Path, conf: RunConf) -> None:
    """Copy predictions of another tag of the same benchmark with the same data+model config."""
    if (out / "predictions.h5").exists() or not out.parent.is_dir():
        return
    want = conf.export_part()
    for sib in sorted(out.parent.iterdir()):
        if sib == out or not (sib / "predictions.h5").exists():
            continue
        saved = load_conf(sib / "conf.yaml")
        if saved and _diff(_saved_export_part(saved), want) is None:
            logger.info("reusing the predictions of tag '%s'", sib.name)
            with atomic_path(out / "predictions.h5") as tmp:
                shutil.copyfile(sib / "predictions.h5", tmp)
            return


def write_conf(out: Path, conf: RunConf) -> None:
    text = OmegaConf.to_yaml(
        OmegaConf.create(
            {
                "benchmark": conf.benchmark.name,
                "data": conf.data,
                "model": conf.model,
                "eval": conf.eval,
            }
        )
    )
    atomic_write_text(out / "conf.yaml", text)
