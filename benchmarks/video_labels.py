"""Label precision of GIM's labelling against exact homographies (a synthetic video).

    python benchmarks/video_labels.py [--size 640 480] [--frames 81] [--pipelines gim-rootsift ...]

Renders a real photograph along a smooth homography path (tiepoint.video.synthetic), samples
frames as GIM does, labels every skip (and a crop-and-rematch run from the first pipeline's
labels) and prints, per label set: labelled pairs, labels per pair, and the fraction of labels
within 1 / 3 px of the ground truth.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SHARED_DATA

from tiepoint.video.frames import extract_frames
from tiepoint.video.labels import Labeler, label_set, read_labels
from tiepoint.video.synthetic import make_homography_video, transfer_error

PHOTO = SHARED_DATA / "pose/megadepth_sample/345822933_b5fb7b6feb_o.jpg"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, nargs=2, default=[640, 480])
    ap.add_argument("--frames", type=int, default=81)
    ap.add_argument("--pipelines", nargs="+", default=["gim-rootsift"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="video_labels_"))
    video = make_homography_video(
        PHOTO, out / "walk.avi", num_frames=args.frames, fps=25, size=tuple(args.size)
    )
    fs = extract_frames(video.path, out / "frames", progress=False)
    print(f"{args.frames} frames {args.size[0]}×{args.size[1]}, listing {fs.listing}")
    print("| labeler | resize | skip | pairs | labels/pair | ≤1 px | ≤3 px | median px | s/pair |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    first = None
    for name in args.pipelines:
        lab = Labeler(name, device=args.device)
        first = first or lab.method
        runs = [(s, False) for s in fs.skips]
        if lab.method == first:
            runs += [(s, True) for s in fs.skips]
        for skip, resize in runs:
            t = time.perf_counter()
            d = label_set(lab, fs, out / "labels", skip, resize, crop_method=first, progress=False)
            dt = (time.perf_counter() - t) / max(len(fs.pairs(skip)), 1)
            labels = read_labels(d)
            err = np.concatenate([transfer_error(v, video.gt(*k)) for k, v in labels.items()])
            print(
                f"| {lab.method} | {'T' if resize else 'F'} | {skip} | "
                f"{len(labels)}/{len(fs.pairs(skip))} | {len(err) / max(len(labels), 1):.0f} | "
                f"{np.mean(err < 1):.3f} | {np.mean(err < 3):.3f} | {np.median(err):.2f} | "
                f"{dt:.1f} |"
            )


if __name__ == "__main__":
    main()
