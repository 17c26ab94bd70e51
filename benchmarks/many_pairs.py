"""Pairs per second over an exhaustive set of real images: one-pair loop vs `match_pairs` vs batched.

    python benchmarks/many_pairs.py [--pipeline aliked+lightglue] [--resize 1024] [--keypoints 2048]
                                    [--batch-size 8] [--device cpu] [--images A B ...] [--json F]

Default images: the 6 Oxford boat and the 6 HPatches graffiti images of ../shared/data (12 images,
66 pairs). In one run, on the same pairs:
  loop         `tiepoint.match(a, b)` per pair: both images extracted for every pair
  match_pairs  `Matcher.match_pairs`, each image extracted once (the pipeline as configured)
  fixed        the same with adaptive depth/width off (what the batched path runs)
  batched      `match_pairs(batch_size=B)`: B pairs per padded matcher call, adaptivity off
and prints pairs/s, the ratios to the loop, and the mean number of matches a pair.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # spinning threads distort a shared machine

import numpy as np
import torch
from _common import SHARED_DATA

import tiepoint

DEFAULT_IMAGES = [SHARED_DATA / f"homography/oxford_boat/img{i}.png" for i in range(1, 7)] + [
    SHARED_DATA / f"homography/hpatches_v_graffiti/{i}.png" for i in range(1, 7)
]
FIXED = ["matcher.depth_confidence=-1", "matcher.width_confidence=-1"]


def run(label: str, fn, pairs) -> dict:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t = time.perf_counter()
    results = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    dt = time.perf_counter() - t
    matches = float(np.mean([len(r) for r in results]))
    print(
        f"{label:12s} {len(pairs) / dt:8.2f} pairs/s  ({dt:.1f} s, {matches:.0f} matches/pair)",
        flush=True,
    )
    return {"seconds": dt, "pairs_per_s": len(pairs) / dt, "matches_per_pair": matches}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="aliked+lightglue")
    ap.add_argument("--resize", type=int, default=1024)
    ap.add_argument("--keypoints", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--images", nargs="+", default=[str(p) for p in DEFAULT_IMAGES])
    ap.add_argument("--skip-loop", action="store_true", help="leave out the (slow) one-pair loop")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    pairs = list(itertools.combinations(args.images, 2))
    kp = [f"extractor.max_num_keypoints={args.keypoints}"]
    print(
        f"{args.pipeline}, {len(args.images)} images, {len(pairs)} pairs, {args.resize} px, "
        f"{args.keypoints} keypoints, batch {args.batch_size}, "
        f"{args.device or ('cuda' if torch.cuda.is_available() else 'cpu')}, "
        f"{torch.get_num_threads()} threads",
        flush=True,
    )
    common = {"resize": args.resize, "device": args.device}
    plain = tiepoint.Matcher(args.pipeline, overrides=kp, **common)
    fixed = tiepoint.Matcher(args.pipeline, overrides=kp + FIXED, **common)
    plain.match(*pairs[0])  # warm-up (allocations, cuDNN/oneDNN choices)
    fixed.match_features_batch([(fixed.extract(pairs[0][0]), fixed.extract(pairs[0][1]))] * 2)

    def each(m, **kw):
        return lambda: [r for _, _, r in m.match_pairs(pairs, progress=False, **kw)]

    out = {"pairs": len(pairs), "images": len(args.images), "settings": vars(args)}
    if not args.skip_loop:
        once = dict(pipeline=args.pipeline, resize=args.resize, device=args.device, overrides=kp)
        tiepoint.match(*pairs[0], **once)  # loads its own cached Matcher
        loop = lambda: [tiepoint.match(a, b, **once) for a, b in pairs]
        out["loop"] = run("loop", loop, pairs)
    out["match_pairs"] = run("match_pairs", each(plain), pairs)
    out["fixed"] = run("fixed", each(fixed), pairs)
    out["batched"] = run(
        f"batched({args.batch_size})", each(fixed, batch_size=args.batch_size), pairs
    )
    base = "loop" if "loop" in out else "match_pairs"
    ratios = {
        k: out[k]["pairs_per_s"] / out[base]["pairs_per_s"]
        for k in ("loop", "match_pairs", "fixed", "batched")
        if k in out
    }
    print("ratios to " + base + ": " + ", ".join(f"{k} {v:.2f}×" for k, v in ratios.items()))
    print(
        f"batched / fixed (same work, padded batches): {out['batched']['pairs_per_s'] / out['fixed']['pairs_per_s']:.2f}×"
    )
    out["ratios"] = ratios
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
