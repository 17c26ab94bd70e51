"""Label quality per stage against exact truth: direct labels at each skip vs propagated labels.

Uses the synthetic scene of tests/video/synthetic_labels.py (a planar scene along a smooth camera
path with translation, zoom, rotation and perspective; per-method detections with 0.25 px jitter;
2% outlier rows per label file), writes every label set in GIM's layout, propagates every target,
and reports count and precision (≤ 3 px under the composed GT homography) per stage.

    PYTHONPATH=src python benchmarks/video_propagation_truth.py [--frames 161] [--out DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "video"))
from synthetic_labels import Scene, gt_error, write_gim_labels

from tiepoint.video.propagate import find_label_sets, load_propagated, propagate_video


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=161)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    root = Path(args.out or tempfile.mkdtemp())
    video = "walk test"
    pseudo = write_gim_labels(root / "pseudo", Scene(), video, frames=args.frames)
    print(f"{'stage':28s} {'pairs':>6s} {'labels/pair':>12s} {'precision':>10s} {'span':>9s}")
    for skip in (5, 10, 20):
        n, ok, tot = 0, 0, 0
        for s in find_label_sets(pseudo, video):
            if s.skip != skip:
                continue
            for f in s.path.glob("[[]*.npy"):
                a, b = map(int, f.stem.strip("[]").split())
                lab = np.load(f)
                e = gt_error(lab, a, b)
                n, ok, tot = n + 1, ok + (e <= 3).sum(), tot + len(e)
        print(
            f"{f'direct labels, skip {skip}':28s} {n:6d} {tot / n:12.0f} {ok / tot:10.4f} {skip:9d}"
        )
    t = time.time()
    s = propagate_video(pseudo, video, root / "prop")
    dt = time.time() - t
    spans, ok, tot, n = [], 0, 0, 0
    for f in sorted(s["folder"].glob("*_*.npy")):
        lab, i0, i1 = load_propagated(f)
        e = gt_error(lab, i0, i1)
        spans.append(i1 - i0)
        n, ok, tot = n + 1, ok + (e <= 3).sum(), tot + len(e)
    print(
        f"{'propagated':28s} {n:6d} {tot / max(n, 1):12.0f} {ok / max(tot, 1):10.4f} "
        f"{min(spans)}-{max(spans)}"
    )
    print(
        f"targets {s['targets']}, written {s['written']}, rejected {s['bad']}; "
        f"median span {np.median(spans):.0f} frames = {np.median(spans) / 20:.1f}x the largest "
        f"skip; {dt:.1f} s ({dt / max(s['targets'], 1):.2f} s/target)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
