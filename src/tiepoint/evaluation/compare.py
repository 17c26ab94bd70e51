"""Side-by-side comparison of runs (tags) of one benchmark: a table and cumulative error curves."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

from ..errors import DatasetError
from .run_conf import results_dir
from .runner import CURVE_RANGE, TASK_PREFIX, UNITS, read_results

DEFAULT_STATS = (
    "mnum_matches",
    "mnum_keypoints",
    "mprec@3px",
    "mepi_prec@5e-4",
    "mtime_ms",
    "ransac_th",
)
CURVE_KEYS = {"homography": "H_error_ransac", "pose": "rel_pose_error"}


def load_run(benchmark: str, tag: str, output_dir=None) -> tuple[dict, Path]:
    out = results_dir(benchmark, tag, output_dir)
    path = out / "summaries.json"
    if not path.exists():
        runs = sorted(p.name for p in out.parent.glob("*") if (p / "summaries.json").exists())
        have = f"; runs with results: {', '.join(runs)}" if runs else ""
        raise DatasetError(
            f"no results for tag '{tag}' at {out} (run `tiepoint eval {benchmark} ...` first){have}"
        )
    return json.loads(path.read_text()), out


def _default_key(k: str) -> bool:
    base = k.split("/")[-1]
    return (
        "@" in base
        and not base.startswith(("mprec", "mepi"))
        or base.endswith("_mAA")
        or base in DEFAULT_STATS
    )


def _is_group_key(k: str) -> bool:
    parts = k.split("/")
    return len(parts) > (2 if parts[0] in TASK_PREFIX.values() else 1)


def _fmt(k: str, v) -> str:
    if v is None:
        return "-"
    if isinstance(v, str):
        return v
    base = k.split("/")[-1]
    if ("@" in base and not base.startswith("m")) or base.endswith("_mAA"):
        return f"{100 * v:.1f}"
    if isinstance(v, float):
        return f"{v:.0f}" if abs(v) >= 100 else f"{v:.3g}"
    return str(v)


def compare(
    benchmark: str,
    tags: Sequence[str],
    output_dir=None,
    keys: Sequence[str] | None = None,
    groups: bool = False,
    out: str | None = None,
) -> tuple[str, Path]:
    """Return the table (AUCs in %) and write one PNG of cumulative curves, a panel per task."""
    runs = {tag: load_run(benchmark, tag, output_dir) for tag in tags}
    if keys:
        rows = list(keys)
    else:
        rows = []
        for summ, _ in runs.values():
            rows += [
                k
                for k in summ
                if k not in rows and _default_key(k) and (groups or not _is_group_key(k))
            ]
    width = max([len(r) for r in rows] + [10])
    cols = [max(len(t), 8) for t in tags]
    lines = [" " * width + "  " + "  ".join(t.rjust(c) for t, c in zip(tags, cols))]
    for r in rows:
        vals = [_fmt(r, runs[t][0].get(r)) for t in tags]
        lines.append(r.ljust(width) + "  " + "  ".join(v.rjust(c) for v, c in zip(vals, cols)))

    from ..viz.curves import save_cumulative

    panels = {}
    for tag, (_, d) in runs.items():
        if not (d / "results.h5").exists():
            continue
        for task_name, res in read_results(d / "results.h5").items():
            key = CURVE_KEYS[task_name]
            task = next(t for t, n in TASK_PREFIX.items() if n == task_name)
            panel = panels.setdefault(
                task_name,
                dict(
                    curves={},
                    x_max=CURVE_RANGE[task],
                    unit=UNITS[task],
                    title=f"{benchmark}: {key}",
                ),
            )
            panel["curves"][tag] = res[key]
    if out:
        png = Path(out)
    else:
        stem = "_vs_".join(tags)
        if len(stem) > 120:
            stem = f"{len(tags)}runs-{hashlib.sha1(stem.encode()).hexdigest()[:10]}"
        png = results_dir(benchmark, "", output_dir) / f"compare_{stem}.png"
    if not panels:
        raise DatasetError(f"no results.h5 in the runs {', '.join(tags)}: nothing to plot")
    save_cumulative(list(panels.values()), png)
    return "\n".join(lines), png
