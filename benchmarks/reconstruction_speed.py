"""Reconstruction throughput: matching pairs/second local vs Ray, and how extraction + matching
time grows with the number of images for exhaustive vs sequential pairs.

    python benchmarks/reconstruction_speed.py [--pipeline sift+nn] [--workers 2] [--sizes 10 20 30 40]

1. Pairs/second: the exhaustive pairs of the 11 KITTI frames, features extracted once beforehand;
   only the matching stage is timed (Ray actors are started and have loaded the model before the
   clock starts). Local runs one process with 1 or 2 torch threads; Ray runs `--workers` actors
   with one thread each, on a local cluster this script starts. All outputs are checked to be
   identical. Best of `--repeats` interleaved rounds.
2. Scaling: folders of N images (the KITTI frames repeated under new names, so every image has the
   same size and content statistics), timed end to end for extraction + matching, for exhaustive
   and sequential:W pairs. Repeated frames make some pairs identical images; for SIFT + NN that
   costs the same as any other pair (LightGlue would stop early on them).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from tiepoint.reconstruction.pipeline import Options, Reconstruction

HERE = Path(__file__).resolve().parent
KITTI = HERE.parent.parent / "shared" / "data" / "pose" / "kitti_seq1"


def options(args, **kw) -> Options:
    over = [f"extractor.max_num_keypoints={args.max_keypoints}"]
    return Options(pipeline=args.pipeline, resize=args.resize, device="cpu", overrides=over, **kw)


def same_h5(a: Path, b: Path) -> bool:
    def load(p):
        out = {}
        with h5py.File(p) as f:
            f.visititems(
                lambda n, o: out.__setitem__(n, o[()]) if isinstance(o, h5py.Dataset) else None
            )
        return out

    x, y = load(a), load(b)
    return x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x)


def pairs_per_second(args, tmp: Path) -> dict:
    """Best of `--repeats` rounds; each round times every configuration once, in turn, so that
    load from other processes on a shared machine hits them alike."""
    import torch

    base = tmp / "base"
    with Reconstruction(KITTI, base, options(args, pairs="exhaustive")) as r:
        r.extract()
        pairs = r.make_pairs()
    configs = [(f"local-{t}t", "local", t) for t in args.threads] + [
        (f"ray-{args.workers}w", "ray", 1)
    ]
    results = {"pairs": len(pairs), "runs": {name: [] for name, _, _ in configs}}
    for rep in range(args.repeats):
        for name, kind, threads in configs:
            torch.set_num_threads(threads)
            out = tmp / f"{name}-{rep}"
            out.mkdir()
            shutil.copyfile(base / "features.h5", out / "features.h5")
            opts = options(
                args,
                pairs="exhaustive",
                executor=kind,
                workers=args.workers if kind == "ray" else None,
            )
            with Reconstruction(KITTI, out, opts) as r:
                _ = r.executor  # start workers and load models before timing
                t = time.perf_counter()
                st = r.match(pairs)
                dt = time.perf_counter() - t
            assert st.computed == len(pairs)
            results["runs"][name].append(dt)
            print(
                f"  {name:9s} round {rep}: {len(pairs)} pairs in {dt:6.1f} s = "
                f"{len(pairs) / dt:5.2f} pairs/s",
                flush=True,
            )
    results["pairs_per_second"] = {n: len(pairs) / min(v) for n, v in results["runs"].items()}
    ref = tmp / f"{configs[0][0]}-0" / "matches.h5"
    results["identical"] = all(
        same_h5(ref, tmp / f"{n}-{r}" / "matches.h5")
        for n, _, _ in configs
        for r in range(args.repeats)
    )
    print(
        "  best: "
        + ", ".join(f"{n} {v:.2f} pairs/s" for n, v in results["pairs_per_second"].items())
        + f"; all outputs identical: {results['identical']}"
    )
    return results


def scaling(args, tmp: Path) -> list[dict]:
    frames = sorted(KITTI.glob("*.png"))
    rows = []
    for n in args.sizes:
        images = tmp / f"images{n}"
        images.mkdir()
        for k in range(n):
            (images / f"f{k:03d}.png").symlink_to(frames[k % len(frames)])
        for spec in ("exhaustive", f"sequential:{args.window}"):
            out = tmp / f"out{n}-{spec.replace(':', '')}"
            with Reconstruction(images, out, options(args, pairs=spec)) as r:
                t = time.perf_counter()
                ex = r.extract()
                pairs = r.make_pairs()
                st = r.match(pairs)
                dt = time.perf_counter() - t
            row = {
                "images": n,
                "pairs_spec": spec,
                "pairs": len(pairs),
                "extract_s": ex.seconds,
                "match_s": st.seconds,
                "total_s": dt,
            }
            rows.append(row)
            print(
                f"  {n:3d} images {spec:13s} {len(pairs):4d} pairs: extract {ex.seconds:6.1f} s, "
                f"match {st.seconds:6.1f} s, total {dt:6.1f} s",
                flush=True,
            )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pipeline", default="sift+nn")
    p.add_argument("--resize", type=int, default=1024)
    p.add_argument("--max-keypoints", type=int, default=2048)
    p.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="torch threads of the local executor (each value is one configuration)",
    )
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--workers", type=int, default=2, help="Ray actors (one thread each)")
    p.add_argument("--sizes", type=int, nargs="+", default=[10, 20, 30, 40])
    p.add_argument("--window", type=int, default=5, help="sequential window")
    p.add_argument("--skip-ray", action="store_true")
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = p.parse_args()
    if not KITTI.exists():
        sys.exit(f"KITTI frames not found at {KITTI}")
    report = {"pipeline": args.pipeline, "resize": args.resize, "max_keypoints": args.max_keypoints}
    with tempfile.TemporaryDirectory(prefix="tiepoint-bench-") as tmp:
        tmp = Path(tmp)
        if not args.skip_ray:
            import ray

            print(f"matching throughput, 11 KITTI frames, {args.pipeline}:")
            ray.init(
                num_cpus=args.workers,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            try:
                report["throughput"] = pairs_per_second(args, tmp / "throughput")
            finally:
                ray.shutdown()
        if not args.skip_scaling:
            print(f"extraction + matching time vs number of images, {args.pipeline}:")
            report["scaling"] = scaling(args, tmp)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
