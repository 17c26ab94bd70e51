"""The benchmark inspector: everything read from the files `tiepoint eval` wrote, nothing rerun.

    <results>/<benchmark>/<tag>/{conf.yaml, predictions.h5, results.h5, summaries.json}

A run counts when it has `summaries.json`. Per-pair errors come from `results.h5`, the matches
of a pair from `predictions.h5` (one `MatchResult` group per pair), the images from the dataset
the run's `conf.yaml` names (a grey canvas if it moved), the table and curves from
`tiepoint.evaluation.compare` exactly as `tiepoint compare` prints and draws them.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError
from ..types import MatchResult


@dataclass
class ResultsFolder:
    root: Path

    def __post_init__(self):
        self.root = Path(self.root)

    def benchmarks(self) -> list[str]:
        if not self.root.is_dir():
            raise DatasetError(f"results folder {self.root} does not exist")
        found = sorted(b.name for b in self.root.iterdir() if b.is_dir() and self.tags(b.name))
        if not found:
            raise DatasetError(
                f"results folder {self.root} holds no benchmark runs (write some with "
                f"`tiepoint eval BENCHMARK PIPELINE --output-dir ...`)"
            )
        return found

    def tags(self, benchmark: str) -> list[str]:
        d = self.root / benchmark
        if not d.is_dir():
            return []
        return sorted(t.name for t in d.iterdir() if (t / "summaries.json").is_file())

    def run_dir(self, benchmark: str, tag: str) -> Path:
        if "/" in benchmark + tag or ".." in (benchmark, tag):
            raise DatasetError(f"bad benchmark or tag name '{benchmark}/{tag}'")
        d = self.root / benchmark / tag
        if not (d / "summaries.json").is_file():
            raise DatasetError(f"{d}: no summaries.json (not a finished `tiepoint eval` run)")
        return d

    def per_pair(self, benchmark: str, tag: str) -> dict[str, dict[str, np.ndarray]]:
        """task name ('homography' / 'pose') → results.h5 columns (names, errors, ...)."""
        from ..evaluation.runner import read_results

        path = self.run_dir(benchmark, tag) / "results.h5"
        if not path.is_file():
            raise DatasetError(f"{path}: missing (the run was not evaluated)")
        return read_results(path)

    def tasks(self, benchmark: str, tags: list[str]) -> list[str]:
        """Tasks present in every chosen run."""
        sets = [set(self.per_pair(benchmark, t)) for t in tags]
        return sorted(set.intersection(*sets)) if sets else []

    def scatter(self, benchmark: str, tag_a: str, tag_b: str, task: str):
        """(pair names, error of A, error of B, error key, cap) over the pairs both runs have."""
        from ..evaluation.compare import CURVE_KEYS
        from ..evaluation.runner import CURVE_RANGE, TASK_PREFIX

        key = CURVE_KEYS[task]
        cap = next(CURVE_RANGE[t] for t, n in TASK_PREFIX.items() if n == task)
        a, b = self.per_pair(benchmark, tag_a)[task], self.per_pair(benchmark, tag_b)[task]
        ib = {n: i for i, n in enumerate(b["names"])}
        names = [n for n in a["names"] if n in ib]
        ia = {n: i for i, n in enumerate(a["names"])}
        ea = np.array([a[key][ia[n]] for n in names], np.float64)
        eb = np.array([b[key][ib[n]] for n in names], np.float64)
        return names, ea, eb, key, cap

    def compare(self, benchmark: str, tags: list[str], png: Path) -> str:
        """`tiepoint compare`'s table, and its curves written to `png` (not into the results)."""
        from ..evaluation.compare import compare

        with tempfile.TemporaryDirectory() as tmp:
            os.symlink(self.root.resolve(), Path(tmp) / "results")  # compare wants <out>/results
            table, _ = compare(benchmark, tags, output_dir=tmp, out=str(png))
        return table

    def pair_result(self, benchmark: str, tag: str, pair: str) -> MatchResult:
        import h5py

        from ..evaluation.predictions import pair_key

        path = self.run_dir(benchmark, tag) / "predictions.h5"
        if not path.is_file():
            raise DatasetError(f"{path}: missing")
        with h5py.File(path, "r") as f:
            key = pair_key(pair)
            if key not in f:
                raise DatasetError(f"{path}: no pair '{pair}'")
            return MatchResult.from_h5(f[key])

    def pair_images(self, benchmark: str, tag: str, pair: str) -> tuple[Path | None, Path | None]:
        """The pair's image files, from the dataset the run's conf.yaml names (None if gone)."""
        from ..evaluation.benchmarks import get_benchmark
        from ..evaluation.run_conf import load_conf

        conf = load_conf(self.run_dir(benchmark, tag) / "conf.yaml") or {}
        try:
            bench = get_benchmark(conf.get("benchmark", benchmark), conf.get("data"))
            for p in bench.load_pairs():
                if p.name == pair:
                    return Path(p.image0), Path(p.image1)
        except Exception:  # the dataset moved or changed: draw on a blank canvas
            pass
        return None, None

    def pair_row(self, benchmark: str, tag: str, task: str, pair: str) -> dict:
        res = self.per_pair(benchmark, tag)[task]
        i = list(res["names"]).index(pair)
        keep = (
            "num_matches",
            "num_keypoints",
            "ransac_inl",
            "ransac_inl%",
            "H_error_ransac",
            "rel_pose_error",
            "R_error",
            "t_error",
            "time_ms",
        )
        row = {"tag": tag}
        for k in keep:
            if k in res:
                v = float(res[k][i])
                row[k] = round(v, 3) if np.isfinite(v) else str(v)
        return row
