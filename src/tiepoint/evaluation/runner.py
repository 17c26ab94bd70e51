"""Benchmark runs: export predictions once (resumable), evaluate with any estimator, summarise.

    outputs/results/<benchmark>/<tag>/
        conf.yaml         benchmark, data, model (resolved pipeline config) and eval settings
        predictions.h5    one `MatchResult` group per pair (docs/formats.md) + a `done` attr
        results.h5        per-pair metrics of the last evaluation
        summaries.json    the numbers (AUCs, medians/means), in the field's key naming
        *.png             cumulative error curves

Predictions depend only on `data` and `model` (`run_conf.py` decides whether a tag's files may be
reused; `predictions.py` exports them resumably); a changed estimator or threshold re-evaluates
the cached predictions. This module evaluates them and writes results, summaries and curves.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path, atomic_write_text
from ..estimators import DEFAULT_THRESHOLDS, POINT_LINE, POINT_LINE_THRESHOLD
from ..geometry.homography import scale_homography
from ..images import scale_points, target_size
from . import metrics
from .benchmarks import HOMOGRAPHY, POSE, Benchmark, Pair
from .download import fetch_dataset
from .predictions import export_predictions, load_prediction
from .run_conf import (
    RunConf,
    build_conf,
    check_or_reset,
    default_tag,
    results_dir,
    reuse_sibling_predictions,
    write_conf,
)

logger = logging.getLogger("tiepoint")

TASK_PREFIX = {HOMOGRAPHY: "homography", POSE: "pose"}
AUC_KEYS = {HOMOGRAPHY: ("H_error_dlt", "H_error_ransac"), POSE: ("rel_pose_error",)}
UNITS = {HOMOGRAPHY: "px", POSE: "°"}
CURVE_RANGE = {HOMOGRAPHY: 10.0, POSE: 30.0}


def _json_safe(v):
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (float, np.floating)):
        return (
            None
            if math.isnan(v)
            else float(v)
            if math.isfinite(v)
            else ("inf" if v > 0 else "-inf")
        )
    if isinstance(v, np.integer):
        return int(v)
    return v


# ------------------------------------------------------------------ evaluation
def _thresholds(ev: dict, task: str) -> list[float]:
    th = ev.get("ransac_th")
    if th is None:
        if ev["estimator"] == POINT_LINE:
            return [POINT_LINE_THRESHOLD]
        return [DEFAULT_THRESHOLDS[task][ev["estimator"]]]
    if isinstance(th, (list, tuple)):
        return [float(x) for x in th]
    return list(metrics.SWEEP_THRESHOLDS) if float(th) < 0 else [float(th)]


def _matched_lines(d, bench: Benchmark, estimator: str) -> dict:
    """The matched line segments of a prediction, for the `point_line` estimator (else {})."""
    if estimator != POINT_LINE or d.line_matches is None or d.lines0 is None:
        return {}
    lm = np.asarray(d.line_matches, np.int64).reshape(-1, 2)
    l0 = np.asarray(d.lines0, np.float64)[lm[:, 0]].reshape(-1, 2)
    l1 = np.asarray(d.lines1, np.float64)[lm[:, 1]].reshape(-1, 2)
    if bench.eval_at_resized:
        l0 = scale_points(l0, bench.scale(d.image_size0))
        l1 = scale_points(l1, bench.scale(d.image_size1))
    return {"lines0": l0.reshape(-1, 2, 2), "lines1": l1.reshape(-1, 2, 2)}


def evaluate_task(
    bench: Benchmark, task: str, pairs: list[Pair], f: h5py.File, ev: dict, progress: bool = True
) -> tuple[dict, dict]:
    """Per-pair results (dict of lists) and summaries of one task."""
    if bench.conf.get("protocol") == "dkm":
        from . import dkm_protocol

        return dkm_protocol.evaluate(bench, task, pairs, lambda p: load_prediction(f, p))
    ths = _thresholds(ev, task)
    opts = dict(ev.get("options") or {})  # estimator options, e.g. eval.options.method=usac_magsac
    base, robust = [], {th: [] for th in ths}
    for p in tqdm(pairs, desc=f"evaluating {TASK_PREFIX[task]}", unit="pair", disable=not progress):
        d = load_prediction(f, p)
        pts0, pts1 = d.points0.astype(np.float64), d.points1.astype(np.float64)
        scores, n_kpts = d.scores.astype(np.float64), (len(d.keypoints0) + len(d.keypoints1)) / 2
        if task == HOMOGRAPHY:
            H, size = p.H_0to1, d.image_size0
            if bench.eval_at_resized:
                s0, s1 = bench.scale(d.image_size0), bench.scale(d.image_size1)
                pts0, pts1 = scale_points(pts0, s0), scale_points(pts1, s1)
                H = scale_homography(H, s0, s1)
                size = target_size(d.image_size0, bench.conf.resize, bench.conf.side)
            r = metrics.eval_homography_pair(pts0, pts1, scores, H, size, n_kpts)
            if d.line_matches is not None:  # line pipelines
                r["num_line_matches"] = len(d.line_matches)
            line_opts = _matched_lines(d, bench, ev["estimator"])
            for th in ths:
                robust[th].append(
                    metrics.eval_homography_robust(
                        pts0, pts1, H, size, ev["estimator"], th, **opts, **line_opts
                    )
                )
        else:
            r = metrics.eval_pose_pair(pts0, pts1, p.K0, p.K1, p.T_0to1, n_kpts)
            for th in ths:
                robust[th].append(
                    metrics.eval_pose_robust(
                        pts0, pts1, p.K0, p.K1, p.T_0to1, ev["estimator"], th, **opts
                    )
                )
        r["time_ms"] = 1000 * sum(d.timings.values())
        base.append(r)

    err_key = AUC_KEYS[task][-1]
    auc_ths = bench.auc_thresholds[task]
    fail = getattr(bench, "failure_error", math.inf)
    errs = {th: [min(x[err_key], fail) for x in robust[th]] for th in ths}
    best = ths[0] if len(ths) == 1 else metrics.pick_best_threshold(errs, auc_ths)
    if len(ths) > 1:
        for th in ths:
            aucs = metrics.error_auc(errs[th], auc_ths)
            logger.info(
                "  %s threshold %g: AUC %s",
                ev["estimator"],
                th,
                " / ".join(f"{100 * a:.1f}" for a in aucs) + (" ← best" if th == best else ""),
            )

    results: dict[str, list] = {
        "names": [p.name for p in pairs],
        "groups": [p.group for p in pairs],
    }
    for rows in (base, robust[best]):
        for k in dict.fromkeys(k for row in rows for k in row):  # optional keys: NaN where absent
            results[k] = [row.get(k, math.nan) for row in rows]
    for k in AUC_KEYS[task]:
        results[k] = [min(x, fail) for x in results[k]]

    stat = bench.stat[task]
    # counts and precisions: the benchmark's statistic; errors (inf on failure) and RANSAC
    # inliers: always the median, as Glue Factory reports them
    median_keys = ("ransac_inl", "ransac_inl%", "ransac_line_inl", "R_error", "t_error")
    median_keys += AUC_KEYS[task]
    summary = metrics.summarize(
        results, AUC_KEYS[task], auc_ths, UNITS[task], stat=stat, median_keys=median_keys
    )
    summary["mtime_ms"] = metrics._stat(results["time_ms"], "mean")
    summary["ransac_th"] = best
    if bench.group_summaries:
        groups = sorted(set(results["groups"]) - {""})
        for g in groups:
            idx = [i for i, x in enumerate(results["groups"]) if x == g]
            for k in AUC_KEYS[task]:
                aucs = metrics.error_auc([results[k][i] for i in idx], auc_ths)
                for t, a in zip(auc_ths, aucs):
                    summary[f"{g}/{k}@{metrics.format_threshold(t)}{UNITS[task]}"] = round(a, 4)
        headline = getattr(bench, "headline", None)
        if headline and groups:
            key = headline[0]
            summary[f"{key}_mean_of_{headline[1]}"] = round(
                float(np.mean([summary[f"{g}/{key}"] for g in groups])), 4
            )
    return results, summary


def write_results(path: Path, results: dict[str, dict]) -> None:
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for task, res in results.items():
            g = f.create_group(TASK_PREFIX[task])
            for k, v in res.items():
                if k in ("names", "groups"):
                    g.create_dataset(k, data=np.array(v, dtype=h5py.string_dtype()))
                else:
                    g.create_dataset(k, data=np.asarray(v, np.float64))


def read_results(path: Path) -> dict[str, dict[str, np.ndarray]]:
    out = {}
    with h5py.File(path, "r") as f:
        for task_name, g in f.items():
            out[task_name] = {
                k: (g[k].asstr()[()] if k in ("names", "groups") else g[k][()]) for k in g
            }
    return out


def evaluate(conf: RunConf, pairs: list[Pair], out: Path, progress: bool = True) -> dict:
    bench, ev = conf.benchmark, conf.eval
    tasks = [t for t in bench.tasks if any(p.task == t for p in pairs)]
    multi = len(tasks) > 1
    summaries, results = {}, {}
    with h5py.File(out / "predictions.h5", "r") as f:
        for task in tasks:
            res, summ = evaluate_task(
                bench, task, [p for p in pairs if p.task == task], f, ev, progress
            )
            results[task] = res
            prefix = f"{TASK_PREFIX[task]}/" if multi else ""
            summaries.update({f"{prefix}{k}": v for k, v in summ.items()})
    write_results(out / "results.h5", results)
    atomic_write_text(
        out / "summaries.json",
        json.dumps(_json_safe(summaries), indent=2, ensure_ascii=False) + "\n",
    )
    from ..viz.curves import save_cumulative

    for task, res in results.items():
        if task == HOMOGRAPHY:
            curves = {"DLT": res.get("H_error_dlt"), ev["estimator"]: res["H_error_ransac"]}
            curves = {k: v for k, v in curves.items() if v is not None}  # dkm protocol: no DLT
            name, title = "homography_recall.png", f"{bench.name}: homography corner error"
        else:
            curves = {ev["estimator"]: res["rel_pose_error"]}
            name, title = "pose_recall.png", f"{bench.name}: relative pose error max(R, t)"
        save_cumulative(
            [dict(curves=curves, x_max=CURVE_RANGE[task], unit=UNITS[task], title=title)],
            out / name,
        )
    return summaries


# ------------------------------------------------------------------ entry point
def run(
    benchmark: str,
    pipeline,
    estimator: str | None = None,
    ransac_th: float | None = None,
    tag: str | None = None,
    overwrite: bool = False,
    overrides: Sequence[str] = (),
    output_dir=None,
    data_root=None,
    device=None,
    weights=None,
    download: bool = False,
    progress: bool = True,
    matcher_factory=None,
    executor: str | None = None,
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> tuple[dict | None, Path]:
    """Export (or reuse) predictions of `pipeline` on `benchmark`, evaluate, write everything.

    Returns (summaries, results directory). `executor` ("local" | "ray") or `shard` (i, n) run
    the export on reconstruction's executors (`export.py`); a shard that leaves pairs of other
    shards missing returns (None, directory) without evaluating. `matcher_factory` replaces `tiepoint.Matcher(...)`
    (tests use it to inject a fake or failing matcher); it gets the resolved pipeline config.
    """
    overrides = list(overrides or [])
    conf = build_conf(benchmark, pipeline, estimator, ransac_th, overrides, data_root, weights)
    bench = conf.benchmark
    if download and bench.resource is not None and not bench.root.exists():
        fetch_dataset(bench.resource, bench.root.parent, progress=progress)
    pairs = bench.load_pairs()
    tag = tag or default_tag(pipeline, estimator, ransac_th, overrides, weights)
    out = results_dir(bench.name, tag, output_dir)
    out.mkdir(parents=True, exist_ok=True)
    check_or_reset(out, conf, overwrite)
    reuse_sibling_predictions(out, conf)
    write_conf(out, conf)

    def make_matcher():
        model_conf = {k: v for k, v in conf.model.items() if k not in ("pipeline", "weights")}
        if matcher_factory is not None:
            return matcher_factory(model_conf)
        from ..api import Matcher

        return Matcher(model_conf, device=device, weights=weights)

    dense = "dense" in conf.model
    if executor is not None or shard is not None:  # export.py: local / Ray / shard, then merge
        from .export import ExportSpec, ExportWorker, export_with_executor

        model_conf = {k: v for k, v in conf.model.items() if k not in ("pipeline", "weights")}
        spec = ExportSpec(
            str(out), model_conf, device, weights, dense, bool(conf.eval["store_dense"])
        )
        ExportWorker.factory = matcher_factory
        try:
            n_new, left = export_with_executor(
                pairs, out, spec, executor or "local", shard, workers, ray_address
            )
        finally:
            ExportWorker.factory = None
        if left:  # other shards' pairs are still missing: evaluate once they are in
            logger.info("%d pairs matched; %d still missing (other shards)", n_new, left)
            return None, out
    else:
        n_new = export_predictions(
            pairs,
            out / "predictions.h5",
            make_matcher,
            progress,
            dense,
            bool(conf.eval["store_dense"]),
        )
    if n_new == 0:
        logger.info("all %d pairs already matched in %s", len(pairs), out / "predictions.h5")
    summaries = evaluate(conf, pairs, out, progress)
    return summaries, out


def format_summaries(summaries: dict, groups: bool = False) -> str:
    lines = []
    for k, v in summaries.items():
        if not groups and k.count("/") > (1 if k.split("/")[0] in TASK_PREFIX.values() else 0):
            continue
        if isinstance(v, float) and ("@" in k or k.endswith("_mAA")) and "ransac_th" not in k:
            v = f"{100 * v:.2f}"
        lines.append(f"  {k:42s} {v}")
    return "\n".join(lines)


__all__ = ["evaluate", "evaluate_task", "format_summaries", "read_results", "run"]
