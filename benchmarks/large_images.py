"""Large images: wall time and peak RSS against megapixels, API and CLI, one subprocess per run.

Inputs are real photos upsampled (bicubic, JPEG q95) to each size: the MegaDepth pair of the
shared data. Each run is a fresh Python process (peak RSS of that process alone, from os.wait4);
all runs extract at native resolution (`--resize 0`), tiled (`extractor.tile=1024`) unless
`--untiled` sizes are given.

    python benchmarks/large_images.py [--mp 4 9 25] [--untiled 4] [--pipeline aliked+lightglue]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
from _common import SHARED_DATA

PAIR = [
    SHARED_DATA / "pose/megadepth_sample/345822933_b5fb7b6feb_o.jpg",
    SHARED_DATA / "pose/megadepth_sample/479605349_8aa68e066d_o.jpg",
]
API = """
import sys, time
from tiepoint.api import Matcher
t = time.perf_counter()
m = Matcher(sys.argv[1], resize=0, device="cpu", overrides=sys.argv[4:])
r = m.match(sys.argv[2], sys.argv[3])
print(f"{len(r)} matches")
"""


def upsample(src: Path, mp: float, out: Path) -> Path:
    img = cv2.imread(str(src), cv2.IMREAD_COLOR)
    h, w = img.shape[:2]
    s = (mp * 1e6 / (w * h)) ** 0.5
    big = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(out), big, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return out


def run(cmd: list[str], env: dict) -> tuple[float, float, int, str]:
    """(wall seconds, peak RSS in GB, exit status, last output line) of one child process."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = p.stdout.read()
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    last = (out.strip().splitlines() or [""])[-1][:100]
    return time.perf_counter() - t, usage.ru_maxrss / 1024**2, p.returncode, last


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mp", type=float, nargs="+", default=[4, 9, 25])
    ap.add_argument("--untiled", type=float, nargs="*", default=[4], help="sizes also run untiled")
    ap.add_argument("--pipeline", default="aliked+lightglue")
    ap.add_argument("--tile", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(args.threads),
        "OMP_WAIT_POLICY": "PASSIVE",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mp in args.mp:
            a, b = (upsample(p, mp, Path(tmp) / f"{mp:g}mp_{i}.jpg") for i, p in enumerate(PAIR))
            modes = [("tiled", [f"extractor.tile={args.tile}"])]
            if mp in args.untiled:
                modes.append(("untiled", []))
            for mode, ov in modes:
                api = [sys.executable, "-c", API, args.pipeline, str(a), str(b), *ov]
                cli = [sys.executable, "-m", "tiepoint.cli", "match", str(a), str(b)]
                cli += ["--pipeline", args.pipeline, "--resize", "0", "--device", "cpu"]
                cli += ["--out", str(Path(tmp) / "out"), *ov]
                for what, cmd in (("API", api), ("CLI", cli)):
                    wall, rss, rc, last = run(cmd, env)
                    rows.append((mp, mode, what, wall, rss, rc))
                    print(
                        f"{mp:5g} MP {mode:8s} {what}: {wall:6.1f} s  {rss:5.2f} GB  rc={rc}  {last}"
                    )
                    sys.stdout.flush()
    print(
        f"\n| MP | extraction | run | wall s | peak RSS GB |  ({args.pipeline}, {args.threads} threads)"
    )
    print("|---:|---|---|---:|---:|")
    for mp, mode, what, wall, rss, rc in rows:
        print(
            f"| {mp:g} | {mode} | {what} | {wall:.1f} | {rss:.2f} |"
            + ("" if rc == 0 else f" rc={rc}")
        )


if __name__ == "__main__":
    main()
