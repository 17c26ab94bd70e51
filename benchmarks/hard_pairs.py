"""Hard pairs: homography AUC@3/5/10 and time per pair with and without each option.

Pairs are synthesised from the shared homography sets (img1 of each sequence against img2 warped
by a known H, so H_gt = H_synth · H_1to2): a rotation set (image 2 turned 90/180/270° after a small
random perspective, corners moved ≤ 4%) and a tilt set (a camera orbiting the plane by 60/70/80°
about a random in-plane axis, `hard_pairs.tilt_homography`). The rotation set is run plainly and
with `hard_pairs.rotations=[0,90,180,270]`, the tilt set plainly and with
`hard_pairs.view_synthesis=true` (default tilts 2 and 4).

    python benchmarks/hard_pairs.py [--resize 512] [--pipelines aliked+lightglue sift+nn]
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np
import torch
from _common import SHARED_DATA
from tqdm import tqdm

from tiepoint import hard_pairs as hp
from tiepoint import images
from tiepoint.api import Matcher
from tiepoint.evaluation.metrics import error_auc
from tiepoint.geometry.homography import homography_corner_error

SEQUENCES = {
    "oxford_bikes": ("img1.png", "img2.png", "H1to2p"),
    "oxford_boat": ("img1.png", "img2.png", "H1to2p"),
    "oxford_leuven": ("img1.png", "img2.png", "H1to2p"),
    "hpatches_v_graffiti": ("1.png", "2.png", "H_1_2"),
}
OPTIONS = {
    "rotation": ("hard_pairs.rotations=[0,90,180,270]",),
    "tilt": ("hard_pairs.view_synthesis=true",),
}


def small_perspective(size, rng, amount=0.04):
    w, h = size
    src = np.float32([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]])
    dst = src + rng.uniform(-amount, amount, (4, 2)).astype(np.float32) * [w, h]
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32)).astype(np.float64)


def synth_pairs(seed=0):
    """(name, kind, img0, img1, H_gt) for the rotation and tilt sets."""
    rng = np.random.default_rng(seed)
    out = []
    for seq, (a, b, hname) in SEQUENCES.items():
        d = SHARED_DATA / "homography" / seq
        img0, _ = images.read_image(d / a)
        img2, _ = images.read_image(d / b)
        H12 = np.loadtxt(d / hname)
        size = (img2.shape[1], img2.shape[0])
        for deg in (90, 180, 270):
            Hp, canvas = hp.fit_canvas(small_perspective(size, rng), size)
            warped = hp.warp_image(img2, Hp, canvas)
            im = np.ascontiguousarray(np.rot90(warped, deg // 90))
            H = hp.rotation_homography(canvas, deg) @ Hp
            out.append((f"{seq}/rot{deg}", "rotation", img0, im, H @ H12))
        for tilt in (60, 70, 80):
            Ht, canvas = hp.fit_canvas(hp.tilt_homography(size, tilt, rng.uniform(0, 180)), size)
            out.append(
                (f"{seq}/tilt{tilt}", "tilt", img0, hp.warp_image(img2, Ht, canvas), Ht @ H12)
            )
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resize", type=int, default=512)
    ap.add_argument("--pipelines", nargs="+", default=["aliked+lightglue", "sift+nn"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    pairs = synth_pairs()
    rows = []
    for pipe in args.pipelines:
        for kind in ("rotation", "tilt"):
            sub = [p for p in pairs if p[1] == kind]
            for label, opts in (("plain", ()), (kind.replace("tilt", "views"), OPTIONS[kind])):
                m = Matcher(pipe, resize=args.resize, device="cpu", overrides=list(opts))
                errs, times, by_level = [], [], {}
                for name, _, img0, img1, H_gt in tqdm(sub, desc=f"{pipe} {kind} {label}"):
                    t = time.perf_counter()
                    r = m.match(img0, img1)
                    H = r.homography()[0] if len(r) >= 4 else None
                    times.append(time.perf_counter() - t)
                    e = homography_corner_error(H, H_gt, (img0.shape[1], img0.shape[0]))
                    errs.append(e)
                    by_level.setdefault(name.split("/")[1], []).append(e)
                auc = error_auc(errs, (3, 5, 10))
                level = " ".join(
                    f"{k}:{100 * error_auc(v, (10,))[0]:.0f}" for k, v in sorted(by_level.items())
                )
                rows.append((pipe, kind, label, auc, float(np.mean(times)), level))
                print(
                    f"{pipe:18s} {kind:8s} {label:8s} AUC@3/5/10 "
                    f"{' / '.join(f'{100 * a:.1f}' for a in auc)}  {np.mean(times):.2f} s/pair  "
                    f"(AUC@10 by level {level})",
                    flush=True,
                )
    print(f"\n| pipeline | set | option | AUC@3 | AUC@5 | AUC@10 | s/pair (resize {args.resize}) |")
    print("|---|---|---|---:|---:|---:|---:|")
    for pipe, kind, label, auc, t, _ in rows:
        a = " | ".join(f"{100 * x:.1f}" for x in auc)
        print(f"| {pipe} | {kind} | {label} | {a} | {t:.2f} |")


if __name__ == "__main__":
    main()
