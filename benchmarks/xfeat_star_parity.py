"""Parity of tiepoint's XFeat* (`dense: xfeat_star`) with the official `match_xfeat_star`.

Both load the same official `xfeat.pt` (tiepoint's cache) and run on the same real pairs, top_k
10000, multiscale. The coordinate conventions differ on purpose (the official maps network pixels
back by x·W_s/W'/s, ours by (x + 0.5)·W/W' − 0.5: up to half an input pixel minus half a network
pixel apart), so matches are paired by nearest neighbour in (x0, y0, x1, y1) and their distances
reported, with the counts.

The official code needs only torch, numpy and tqdm; a throwaway venv that also sees tiepoint's
packages is enough:

    python -m venv /tmp/ref-xstar && /tmp/ref-xstar/bin/pip install torch==2.13.0 numpy tqdm
    echo <tiepoint venv>/lib/python3.11/site-packages > /tmp/ref-xstar/lib/python3.11/site-packages/main.pth
    mkdir /tmp/ref-xstar-src && git -C <accelerated_features clone> archive HEAD modules | tar x -C /tmp/ref-xstar-src
    PYTHONPATH=src:/tmp/ref-xstar-src /tmp/ref-xstar/bin/python benchmarks/xfeat_star_parity.py
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA = Path("/work/shared/data")
PAIRS = [
    ("homography/oxford_boat/img1.png", "homography/oxford_boat/img2.png"),
    ("pose/kitti_seq1/000000.png", "pose/kitti_seq1/000005.png"),
]


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))  # (H, W, 3) uint8, as the official demo


def compare(ref: np.ndarray, ours: np.ndarray) -> dict:
    """Nearest-neighbour pairing of (N,4) matches both ways; distances in input pixels."""
    if len(ref) == 0 or len(ours) == 0:
        return {"ref": len(ref), "ours": len(ours)}
    d = np.linalg.norm(ref[:, None] - ours[None], axis=-1)  # (N, M), 4-d distance
    r2o = d.min(1)
    o2r = d.min(0)
    return {
        "ref": len(ref),
        "ours": len(ours),
        "ref_within_1px": float(np.mean(r2o < 1.0)),
        "ours_within_1px": float(np.mean(o2r < 1.0)),
        "median_px": float(np.median(r2o)),
        "p99_px": float(np.quantile(r2o, 0.99)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--top-k", type=int, default=10000)
    args = ap.parse_args()
    from modules.xfeat import XFeat as Official  # the reference, from PYTHONPATH

    from tiepoint import weights
    from tiepoint.models.dense.xfeat_star import XFeatStar

    torch.set_grad_enabled(False)
    ref_model = Official(weights=str(weights.resolve("xfeat")), top_k=args.top_k)
    ours = XFeatStar({"top_k": args.top_k}).eval()
    rows = []
    for a, b in PAIRS:
        im0, im1 = load(DATA / a), load(DATA / b)
        t = time.perf_counter()
        r0, r1 = ref_model.match_xfeat_star(im0, im1)
        t_ref = time.perf_counter() - t
        x0 = torch.from_numpy(im0).permute(2, 0, 1)[None].float() / 255
        x1 = torch.from_numpy(im1).permute(2, 0, 1)[None].float() / 255
        t = time.perf_counter()
        pred = ours({"image0": x0, "image1": x1})
        t_ours = time.perf_counter() - t
        o = torch.cat([pred["keypoints0"], pred["keypoints1"]], -1).numpy()
        row = {"pair": f"{a} / {Path(b).name}", **compare(np.concatenate([r0, r1], -1), o)}
        row.update(ref_s=round(t_ref, 2), ours_s=round(t_ours, 2))
        rows.append(row)
        print(json.dumps(row))


if __name__ == "__main__":
    main()
