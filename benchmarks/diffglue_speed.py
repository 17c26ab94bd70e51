"""DiffGlue's matching time per pair as a ratio to LightGlue's, timed in the same process.

    python benchmarks/diffglue_speed.py [--pair A B] [--max-keypoints 2048] [--steps 1 2 4]

Features: ALIKED-N16 on a real pair at 1024 px (long side), 2048 keypoints, extracted once; only the
matcher is timed (best of `--repeats`). LightGlue is timed with its adaptive depth/width (official
default) and at full depth; DiffGlue has no adaptivity and runs all 9 layers once per DDIM step.
DiffGlue starts from the official ALIKED LightGlue weights here (the official DiffGlue files are not
downloadable): the time does not depend on the weights.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import DEFAULT_PAIR, best_of

import tiepoint


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pair", nargs=2, type=Path, default=DEFAULT_PAIR)
    p.add_argument("--resize", type=int, default=1024)
    p.add_argument("--max-keypoints", type=int, default=2048)
    p.add_argument(
        "--steps", type=int, nargs="+", default=[1, 2, 4], help="DiffGlue DDIM steps to time"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    over = [
        f"extractor.max_num_keypoints={args.max_keypoints}",
        "extractor.detection_threshold=0.0",
    ]
    lg = tiepoint.Matcher("aliked+lightglue", resize=args.resize, device="cpu", overrides=over)
    f0, f1 = lg.extract(args.pair[0]), lg.extract(args.pair[1])
    print(
        f"{args.pair[0].name} ↔ {args.pair[1].name}: {len(f0)}/{len(f1)} ALIKED keypoints, {args.threads} threads"
    )

    rows = []
    t_lg, r = best_of(lambda: lg.match_features(f0, f1), args.repeats)
    rows.append(("lightglue (adaptive)", t_lg, len(r)))
    full = tiepoint.Matcher(
        "aliked+lightglue",
        resize=args.resize,
        device="cpu",
        overrides=over + ["matcher.depth_confidence=-1", "matcher.width_confidence=-1"],
    )
    t_full, r = best_of(lambda: full.match_features(f0, f1), args.repeats)
    rows.append(("lightglue (9 layers)", t_full, len(r)))
    for k in args.steps:
        dg = tiepoint.Matcher(
            "aliked+diffglue",
            resize=args.resize,
            device="cpu",
            overrides=over + [f"matcher.sampling_steps={k}"],
        )
        t, r = best_of(lambda m=dg: m.match_features(f0, f1), args.repeats)
        rows.append((f"diffglue ({k} step{'s' if k > 1 else ''})", t, len(r)))

    print(
        f"{'matcher':22s} {'s/pair':>8s} {'× LG adaptive':>14s} {'× LG 9 layers':>14s} {'matches':>8s}"
    )
    for name, t, n in rows:
        print(f"{name:22s} {t:8.3f} {t / t_lg:14.2f} {t / t_full:14.2f} {n:8d}")
    t1 = next(t for name, t, _ in rows if name == "diffglue (1 step)") if 1 in args.steps else None
    if t1 is not None:
        print(
            f"DiffGlue (reference, 1 step) / LightGlue: {t1 / t_lg:.2f}× (adaptive), {t1 / t_full:.2f}× (full depth)"
        )


if __name__ == "__main__":
    main()
