"""GIM self-training, end to end on a CPU: does training on propagated video labels help?

1. Synthetic videos from real photographs (opencv-doc's sample photos: none of them is in
   ../shared/data), each a smooth camera path with zoom, rotation and perspective
   (`tiepoint.video.synthetic`; `--rotation/--zoom/--tilt`), encoded with OpenCV; frames sampled
   as GIM does. Training, validation and held-out test videos come from different photos.
2. Labels: GIM's RootSIFT at skips 0/1/2, F-MAGSAC 0.5 px (`tiepoint.video.labels`).
3. Propagation to wide baselines (`tiepoint.video.propagate`).
4. Training: the `gim_lightglue` preset on `video_labels`, but from the official
   `aliked+lightglue` weights (ALIKED-n16 frozen, `--keypoints`, CPU-sized), GIM's augmentation
   (rotation capped at `--max-rotation`), the zero-shot loss; with `--gt-share` > 0 mixed as GIM
   does (`mixed` sampler) with ground-truth homography pairs of other photos (`GT_PHOTOS`) under
   LightGlue's full loss (unmatchable points included).
5. Test: held-out videos — wide-baseline frame pairs against their EXACT homography (not labels):
   correct matches per pair at fixed precision, precision at 3 px, the detector's ceiling
   (GT-matchable keypoints), homography corner-error AUC, for the starting weights and the trained
   ones; and `tiepoint eval pairs` on ../shared/data for both (must not degrade beyond noise).

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/gim_self_training.py \
        --photos OPENCV_DOC_DATA --out DIR --rotation 60 --zoom 1.7 0.9 --tilt 0.3 \
        --val butterfly.jpg --exp mixed_a --gt-share 0.5 --lr 3e-5 --iterations 300 --eval-every 50
(OPENCV_DOC_DATA: `apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb X`, then
X/usr/share/doc/opencv-doc/examples/data). Every stage is resumable (rerun the same command); the
report goes to DIR/report_EXP.json. Results and the other runs: docs/video.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

TRAIN = ["aloeL.jpg", "building.jpg", "ela_original.jpg", "pca_test1.jpg", "starry_night.jpg",
         "fruits.jpg", "baboon.jpg", "board.jpg"]  # fmt: skip
VAL = ["basketball1.png"]
TEST = ["aero1.jpg", "home.jpg", "stuff.jpg", "squirrel_cls.jpg", "left.jpg", "orange.jpg"]
# ground-truth photos for the mixed run: the training photos and other opencv-doc photos; not the
# held-out ones, not their partners (aero3, right), not those in ../shared/data (graf, leuven)
GT_PHOTOS = TRAIN + ["apple.jpg", "butterfly.jpg", "messi5.jpg", "rubberwhale1.png", "smarties.png",
                     "Blender_Suzanne1.jpg", "box_in_scene.png", "cards.png", "sudoku.png",
                     "licenseplate_motion.jpg", "chicky_512.png"]  # fmt: skip
TEST_PAIRS = [(0, 40), (0, 80), (40, 120), (80, 160), (0, 160), (60, 140)]


def make_video(photo: Path, root: Path, frames: int, size, **path_options):
    from tiepoint.video.frames import FrameSet, extract_frames
    from tiepoint.video.synthetic import make_homography_video

    vid = photo.stem
    path = root / "videos" / f"{vid}.avi"
    path.parent.mkdir(parents=True, exist_ok=True)
    v = make_homography_video(photo, path, num_frames=frames, fps=25, size=size, **path_options)
    fdir = root / "frames" / vid
    if (fdir / "frames.json").is_file():
        return v, FrameSet.load(fdir)
    return v, extract_frames(path, fdir, progress=False)


def label_and_propagate(fs, root: Path, args) -> dict:
    from tiepoint.video.labels import Labeler, label_video
    from tiepoint.video.propagate import propagate_video

    lab = Labeler("gim-rootsift", device="cpu")
    label_video(lab, fs, root / "pseudo", skips=(0, 1, 2), progress=False)
    return propagate_video(
        root / "pseudo",
        fs.video_id,
        root / "prop",
        step=args.step,
        min_final_matches=args.min_final_matches,
    )


def corner_auc(errs, thresholds=(3, 5, 10)) -> dict:
    """SuperGlue-style AUC of the mean corner error up to t px (failures count as inf)."""
    auc = {}
    for t in thresholds:
        e = np.sort(np.r_[0.0, errs])
        rec = np.linspace(0, 1, len(e))
        last = np.searchsorted(e, t)
        x = np.r_[e[:last], t]
        y = np.r_[rec[:last], rec[last - 1]]
        auc[f"H_auc@{t}px"] = float(np.trapezoid(y, x) / t)
    return auc


def correct_at_precision(scores, ok, precision: float, pairs: int) -> float:
    """Correct matches per pair at the score threshold (pooled over all pairs) where the share of
    correct ones among the kept matches is still ≥ `precision`: a count at FIXED precision, so a
    model cannot gain by matching more at lower precision."""
    order = np.argsort(-scores, kind="stable")
    hits = np.cumsum(ok[order])
    prec = hits / np.arange(1, len(hits) + 1)
    good = np.nonzero(prec >= precision)[0]
    return float(hits[good[-1]] / pairs) if len(good) else 0.0


def gt_matchable(k0, k1, H, th: float = 3.0) -> int:
    """Keypoint pairs that the exact homography makes mutual nearest neighbours within `th` px:
    the most correct matches any matcher could return on these keypoints (the frozen detector's
    ceiling)."""
    if not len(k0) or not len(k1):
        return 0
    q = np.c_[k0, np.ones(len(k0))] @ H.T
    q = q[:, :2] / q[:, 2:]
    d = np.linalg.norm(q[:, None] - np.asarray(k1, np.float64)[None], axis=-1)
    nn0, nn1 = d.argmin(1), d.argmin(0)
    mutual = nn1[nn0] == np.arange(len(k0))
    return int((mutual & (d[np.arange(len(k0)), nn0] <= th)).sum())


def evaluate_h(videos, weights, args) -> dict:
    """Held-out wide-baseline pairs of the synthetic videos against their exact homographies.

    One LightGlue run per pair with filter_threshold 0 (every mutual match with its score): the
    default-threshold metrics (score > 0.1, what `tiepoint match` returns) and the count of correct
    matches at fixed precision (pooled score threshold) come from the same matches."""
    import cv2

    from tiepoint import Matcher
    from tiepoint.video.synthetic import transfer_error

    overrides = [f"extractor.max_num_keypoints={args.keypoints}", "preprocessing.resize=null",
                 "matcher.filter_threshold=0.0"]  # fmt: skip
    m = Matcher("aliked+lightglue", device="cpu", weights=weights, overrides=overrides)
    prec, correct, errs, nm, spans, matchable = [], [], [], [], [], []
    all_s, all_ok = [], []
    for v, fs in videos:
        for i, j in TEST_PAIRS:
            if j >= len(v.homographies):
                continue
            r = m.match(Path(fs.folder) / f"{i}.png", Path(fs.folder) / f"{j}.png")
            H = v.gt(i, j)
            p0 = r.keypoints0[r.matches[:, 0]].astype(np.float64)
            p1 = r.keypoints1[r.matches[:, 1]].astype(np.float64)
            e = transfer_error(np.c_[p0, p1], H) if len(p0) else np.zeros(0)
            all_s.append(r.scores)
            all_ok.append(e <= 3)
            matchable.append(gt_matchable(r.keypoints0, r.keypoints1, H))
            keep = r.scores > 0.1  # LightGlue's default filter
            p0, p1, e = p0[keep], p1[keep], e[keep]
            nm.append(len(p0))
            prec.append(float((e <= 3).mean()) if len(e) else 0.0)
            correct.append(int((e <= 3).sum()))
            err = np.inf
            if len(p0) >= 4:
                Hest, _ = cv2.findHomography(p0, p1, cv2.USAC_MAGSAC, 3.0)
                if Hest is not None:
                    w, h = v.size
                    c = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
                    p = cv2.perspectiveTransform(c[None], Hest)[0]
                    q = cv2.perspectiveTransform(c[None], H)[0]
                    err = float(np.linalg.norm(p - q, axis=1).mean())
            errs.append(err)
            spans.append(j - i)
    errs, spans = np.array(errs), np.array(spans)
    s, ok = np.concatenate(all_s), np.concatenate(all_ok)
    wide = spans >= 120
    return {
        "pairs": len(errs),
        "matches/pair": float(np.mean(nm)),
        "precision@3px": float(np.mean(prec)),
        "correct/pair": float(np.mean(correct)),
        "gt_matchable/pair": float(np.mean(matchable)),
        "recall_of_matchable": float(np.sum(correct) / max(np.sum(matchable), 1)),
        **corner_auc(errs),
        **{
            f"correct/pair@prec{p}": correct_at_precision(s, ok, p, len(errs))
            for p in (0.9, 0.95, 0.98)
        },  # fmt: skip
        "wide_pairs(span>=120)": int(wide.sum()),
        **{f"wide_{k}": v for k, v in corner_auc(errs[wide]).items()},
        "H_errors": errs.round(3).tolist(),
    }


def eval_pairs(weights, tag, args) -> dict:
    """`tiepoint eval pairs` on ../shared/data (reused when the tag's summary exists)."""
    done = args.out / "eval" / "results" / "pairs" / tag / "summaries.json"
    if done.is_file():
        return json.loads(done.read_text())
    cmd = [sys.executable, "-m", "tiepoint.cli", "eval", "pairs", "--pipeline", "aliked+lightglue",
           "--data-root", str(args.data), "--output-dir", str(args.out / "eval"), "--tag", tag,
           "--device", "cpu"]  # fmt: skip
    if weights:
        cmd += ["--weights", str(weights)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    summary = next((args.out / "eval" / "results" / "pairs" / tag).glob("summaries.json"))
    return json.loads(summary.read_text())


def training_conf(vids, prop_dir, root: Path, args) -> dict:
    """`gim_lightglue` from the official aliked_lightglue weights; `--gt-share` > 0 mixes GIM-style
    ground-truth batches (`mixed` sampler): synthetic homographies of `GT_PHOTOS` (none of them in
    the held-out videos or ../shared/data) with LightGlue's full loss, unmatchable points included.
    """
    from omegaconf import OmegaConf

    from tiepoint.config import load_preset

    conf = OmegaConf.to_container(load_preset("training", "gim_lightglue"))
    w, h = args.size
    video = {**conf["data"], "propagate_dir": str(prop_dir), "frames_dir": str(root / "frames"),
             "train_videos": [fs.video_id for _, fs in vids["train"]],
             "val_videos": [fs.video_id for _, fs in vids["val"]], "img_size": [w, h],
             "max_rotation": args.max_rotation, "batch_size": 1, "num_workers": 0}  # fmt: skip
    if args.gt_share > 0:
        gt_dir = root / "gt_photos"
        gt_dir.mkdir(exist_ok=True)
        for n in [n for n in GT_PHOTOS if n not in args.val]:
            if not (gt_dir / n).exists():
                (gt_dir / n).symlink_to(args.photos / n)
        gt = {"name": "homographies", "data_dir": str(gt_dir), "val_size": 1, "train_size": 1000,
              "load_size": 640, "homography": {"patch_shape": [w, h]}}  # fmt: skip
        n_video = 50
        n_gt = round(n_video * args.gt_share / (1 - args.gt_share))
        conf["data"] = {"name": "mixed", "datasets": {"video": video, "gt": gt},
                        "maxlen": [n_video, n_gt], "val": "video", "batch_size": 1,
                        "num_workers": 0}  # fmt: skip
    else:
        conf["data"] = video
    conf["model"]["extractor"] = {
        "name": "aliked",
        "model_name": "aliked-n16",
        "max_num_keypoints": args.keypoints,
        "detection_threshold": -1,
    }
    conf["model"]["num_keypoints"] = args.keypoints
    if args.seed is not None:  # another draw of augmentations, sampling order and padding points
        conf["train"]["seed"] = args.seed
        parts = conf["data"].get("datasets", {"video": conf["data"]})
        for d in [conf["data"], *parts.values()]:
            d["seed"] = args.seed
    conf["model"]["matcher"].update(features="aliked", weights="aliked_lightglue")
    conf["train"].update(
        lr=args.lr, lr_schedule={"type": None}, epochs=1000, max_iterations=args.iterations,
        max_minutes=args.minutes, eval_every_iter=args.eval_every, val_max_batches=6,
        save_every_iter=1000000, log_every_iter=10,
    )  # fmt: skip
    return conf


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True, help="opencv-doc examples/data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data"
    )
    ap.add_argument("--frames", type=int, default=161)
    ap.add_argument("--size", type=int, nargs=2, default=[320, 240])
    ap.add_argument("--rotation", type=float, default=25.0, help="camera path: in-plane degrees")
    ap.add_argument("--zoom", type=float, nargs=2, default=[1.6, 1.1], help="photo px / frame px")
    ap.add_argument("--tilt", type=float, default=0.2, help="camera path: perspective")
    ap.add_argument("--val", nargs="+", default=VAL, help="validation video photos")
    ap.add_argument("--step", type=int, default=2, help="propagation target = idx0 + step·S")
    ap.add_argument("--min-final-matches", type=int, default=128)  # 320×240 SIFT: ~600 labels/pair
    ap.add_argument("--keypoints", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--iterations", type=int, default=None, help="stop after this many steps")
    ap.add_argument("--gt-share", type=float, default=0.0, help="share of GT homography batches")
    ap.add_argument("--seed", type=int, default=None, help="default: the preset's")
    ap.add_argument("--exp", default="gim_aliked_lg", help="experiment name (one per variant)")
    ap.add_argument("--report", type=Path, default=None, help="default: OUT/report_EXP.json")
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--max-rotation", type=float, default=30.0)
    ap.add_argument("--skip-eval-pairs", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = args.out
    report = {"args": {k: str(v) for k, v in vars(args).items()}}
    t0 = time.time()
    vids = {}
    path = {"rotation": args.rotation, "zoom": tuple(args.zoom), "tilt": args.tilt}
    for split, names in (("train", TRAIN), ("val", args.val), ("test", TEST)):
        vids[split] = [
            make_video(args.photos / n, root, args.frames, tuple(args.size), **path) for n in names
        ]
    print(f"videos: {time.time() - t0:.0f} s")
    t0 = time.time()
    stats = []
    for _v, fs in vids["train"] + vids["val"]:
        s = label_and_propagate(fs, root, args)
        stats.append((fs.video_id, s["pairs"], s["bad"]))
    prop_dir = s["folder"].parent
    report["propagated"] = stats
    print(f"labels + propagation: {time.time() - t0:.0f} s; {stats}")
    # label precision of the propagated pairs against the exact homographies
    from tiepoint.video.propagate import load_propagated
    from tiepoint.video.synthetic import transfer_error

    ok = tot = 0
    spans = []
    for v, fs in vids["train"]:
        for f in (prop_dir / fs.video_id).glob("*_*.npy"):
            lab, i0, i1 = load_propagated(f)
            e = transfer_error(lab, v.gt(i0, i1))
            ok, tot = ok + int((e <= 3).sum()), tot + len(e)
            spans.append(i1 - i0)
    report["train_labels"] = {"labels": tot, "precision@3px": ok / max(tot, 1),
                              "spans": [min(spans), max(spans)] if spans else None}  # fmt: skip
    print("propagated train labels:", report["train_labels"])

    from tiepoint.training import train
    from tiepoint.training.checkpoints import list_checkpoints

    exp = root / "training" / args.exp
    if not list(exp.glob("checkpoint_*.tar")):
        t0 = time.time()
        train(args.exp, training_conf(vids, prop_dir, root, args), output_dir=root)
        print(f"training: {time.time() - t0:.0f} s")
    ckpt = list_checkpoints(exp)[-1][1]
    hist = json.loads((exp / "val_history.json").read_text())
    report["val_history"] = [(h["step"], h["label_recall"], h["loss/total"]) for h in hist]
    report["checkpoint"] = str(ckpt)
    print("validation (held-out video's propagated labels):", report["val_history"])

    start = root / f"test_start_{args.keypoints}.json"  # the official weights: computed once
    if not start.is_file():
        start.write_text(json.dumps(evaluate_h(vids["test"], None, args)))
    report["test_start"] = json.loads(start.read_text())
    report["test_trained"] = evaluate_h(vids["test"], ckpt, args)
    print("held-out synthetic pairs, official:", report["test_start"])
    print("held-out synthetic pairs, trained: ", report["test_trained"])
    if not args.skip_eval_pairs:
        report["eval_pairs_start"] = eval_pairs(None, "official", args)
        report["eval_pairs_trained"] = eval_pairs(ckpt, f"trained_{args.exp}", args)
        for k in ("eval_pairs_start", "eval_pairs_trained"):
            print(k, {m: v for m, v in report[k].items() if m.count("/") == 1})
    out = args.report or root / f"report_{args.exp}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
