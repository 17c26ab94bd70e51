"""Parity of `tiepoint.evaluation.zeb_gim.analyse` with GIM's `analysis.py` on GIM's shipped dumps.

GIM ships its ZEB result dumps in `dump/zeb/` (github.com/xuelunshen/gim). Copy them out, e.g.
    git --git-dir=GIM/.git show "HEAD:dump/zeb/[T] gim_dkm           GL3D 100h.txt" > ...
then run `python benchmarks/zeb_gim_analysis.py DUMP_DIR`. Unless --no-reference, it also runs
GIM's own `error_auc` logic (copied below as the reference formula, np.trapz → np.trapezoid) on the
same files and prints the largest difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from tiepoint.evaluation import zeb_gim


def reference_auc(path) -> float:
    """GIM analysis.py, verbatim logic: dedupe first wins, nan/inf → 180, max(R, t), trapezoid."""
    lines = Path(path).read_text().splitlines()
    head = lines[0].split()
    details, stacks = {k: [] for k in head[3:]}, set()
    for x in (line.split() for line in lines[1:]):
        if x[0] in stacks:
            continue
        for k, v in zip(head[3:], x[3:]):
            details[k].append(v)
        stacks.add(x[0])
    e0 = np.array(details["R_errs"], float)
    e1 = np.array(details["t_errs"], float)
    e0[~np.isfinite(e0)] = 180
    e1[~np.isfinite(e1)] = 180
    errors = [0] + sorted(np.max(np.stack([e0, e1]), 0).tolist())
    recall = list(np.linspace(0, 1, len(errors)))
    last = np.searchsorted(errors, 5.0)
    return float(np.trapezoid(recall[:last] + [recall[last - 1]], errors[:last] + [5.0]) / 5.0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("dump_dir")
    ap.add_argument("--no-reference", action="store_true")
    args = ap.parse_args(argv)
    rows = {}
    worst = 0.0
    for model, version in zeb_gim.models_in(args.dump_dir):
        rows[f"{model} {version}"] = r = zeb_gim.analyse(args.dump_dir, model, version)
        if not args.no_reference:
            for name, path in zeb_gim.find_dumps(args.dump_dir, model, version).items():
                worst = max(worst, abs(100 * reference_auc(path) - r[name]))
    print(zeb_gim.format_analysis(rows))
    if not args.no_reference:
        print(f"largest |tiepoint - GIM analysis.py| over all sets: {worst:.2e} AUC points")
    return 0


if __name__ == "__main__":
    sys.exit(main())
