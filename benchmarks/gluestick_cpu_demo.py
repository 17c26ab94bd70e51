"""GlueStick CPU demonstration, the longer run: the `aliked+lsd+gluestick_cpu_demo` preset trained
from random initialisation for a fixed number of steps, then its best checkpoint (by validation
match recall) matching real pairs of `../shared/data/homography` with points and lines.

Reports the validation history (point / line recall, precision, threshold-free top-1) and, per
pair: point matches and the OpenCV-RANSAC corner error, line matches and how many lie within 3 px
of the true line, and the corner error of the `point_line` estimator (points + lines). Writes
`report.json` next to the experiment.

    PYTHONPATH=src python benchmarks/gluestick_cpu_demo.py --photos <opencv-doc examples/data> \\
        [--steps 400] [--train-size 80] [--keypoints 128] [--lines 32] [--out /tmp/gs_demo]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "homography"
PAIRS = [("oxford_leuven", 2), ("oxford_leuven", 4), ("oxford_bikes", 2), ("oxford_boat", 2)]
KEYS = ("step", "loss/total", "match_recall", "match_precision", "top1")
KEYS += ("line_match_recall", "line_match_precision", "line_top1")


def read_h(path: Path) -> np.ndarray:
    return np.array([[float(x) for x in r.split()] for r in path.read_text().splitlines() if r])


def evaluate_pairs(ckpt: Path, lines: int) -> list[dict]:
    import tiepoint
    from tiepoint.geometry.homography import homography_corner_error
    from tiepoint.geometry.lines import line_match_error

    m = tiepoint.Matcher(
        "aliked+lsd+gluestick_cpu_demo",
        device="cpu",
        weights=str(ckpt),
        overrides=[f"extractor.lines.max_num_lines={lines}"],
    )
    rows = []
    for seq, k in PAIRS:
        d = DATA / seq
        r = m.match(d / "img1.png", d / f"img{k}.png")
        H_gt, size = read_h(d / f"H1to{k}p"), Image.open(d / "img1.png").size
        H, inl = r.homography(estimator="opencv", threshold=3.0)
        lm = r.line_matches
        err_l = line_match_error(r.lines0[lm[:, 0]], r.lines1[lm[:, 1]], H_gt)
        Hl, _ = r.homography(estimator="point_line", threshold=3.0)
        rows.append(
            {
                "pair": f"{seq} 1→{k}",
                "keypoints": [len(r.keypoints0), len(r.keypoints1)],
                "matches": len(r),
                "inliers": int(np.sum(inl)) if inl is not None else 0,
                "corner_error_px": homography_corner_error(H, H_gt, size),
                "lines": [len(r.lines0), len(r.lines1)],
                "line_matches": len(lm),
                "line_matches_within_3px": int((err_l < 3).sum()),
                "point_line_corner_error_px": homography_corner_error(Hl, H_gt, size),
            }
        )
        print(rows[-1])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--photos", required=True, help="opencv-doc examples/data folder")
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps (batch 4)")
    ap.add_argument("--train-size", type=int, default=80)
    ap.add_argument("--keypoints", type=int, default=128)
    ap.add_argument("--lines", type=int, default=32)
    ap.add_argument("--out", default="/tmp/gs_demo")
    args = ap.parse_args()
    torch.set_num_threads(1)

    from tiepoint.config import parse_dotlist
    from tiepoint.training import train

    t = time.time()
    exp = train(
        "gs_demo",
        "aliked+lsd+gluestick_cpu_demo",
        parse_dotlist(
            [
                f"data.data_dir={args.photos}",
                f"data.train_size={args.train_size}",
                f"model.extractor.max_num_keypoints={args.keypoints}",
                f"model.extractor.lines.max_num_lines={args.lines}",
                f"model.num_lines={args.lines}",
                "train.max_minutes=null",
                f"train.max_iterations={args.steps}",
            ]
        ),
        output_dir=Path(args.out),
        progress=True,
    )
    wall = time.time() - t
    hist = json.loads((Path(exp) / "val_history.json").read_text())
    for h in hist:
        print({k: round(h[k], 4) if isinstance(h.get(k), float) else h.get(k) for k in KEYS})
    rows = evaluate_pairs(Path(exp) / "checkpoint_best.tar", 128)
    report = {
        "args": vars(args),
        "wall_s_including_feature_cache": round(wall, 1),
        "steps": hist[-1]["step"],
        "validation": [{k: h.get(k) for k in KEYS} for h in hist],
        "pairs": rows,
    }
    (Path(exp) / "report.json").write_text(json.dumps(report, indent=1))
    print(f"→ {Path(exp) / 'report.json'}")


if __name__ == "__main__":
    main()
