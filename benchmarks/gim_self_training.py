"""GIM self-training, end to end on a CPU: does training on propagated video labels help?

1. Synthetic videos from real photographs (opencv-doc's sample photos: none of them is in
   ../shared/data), each a smooth camera path with zoom, rotation and perspective
   (`tiepoint.video.synthetic`), encoded with OpenCV; frames sampled as GIM does.
2. Labels: GIM's RootSIFT at skips 0/1/2, F-MAGSAC 0.5 px (`tiepoint.video.labels`).
3. Propagation to wide baselines (`tiepoint.video.propagate`).
4. Training: the `gim_lightglue` preset on `video_labels`, but from the official
   `aliked+lightglue` weights (ALIKED-n16 frozen, 512 keypoints, CPU-sized), GIM's augmentation
   (DarkAug, rescale, 90% homography; rotation capped at `--max-rotation`), the zero-shot loss.
5. Test: held-out videos (other photos) — wide-baseline frame pairs with their EXACT homography
   (not labels): match precision at 3 px, correct matches per pair, homography corner-error AUC,
   for the starting weights and the trained ones; and `tiepoint eval pairs` on ../shared/data for
   both (must not degrade beyond noise).

    PYTHONPATH=src python benchmarks/gim_self_training.py --photos OPENCV_DOC_DATA --out DIR
(OPENCV_DOC_DATA: `apt-get download opencv-doc && dpkg-deb -x opencv-doc_*.deb X`, then
X/usr/share/doc/opencv-doc/examples/data). Every stage is resumable (rerun the same command).
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
TEST_PAIRS = [(0, 40), (0, 80), (40, 120), (80, 160), (0, 160), (60, 140)]


def make_video(photo: Path, root: Path, frames: int, size):
    from tiepoint.video.frames import FrameSet, extract_frames
    from tiepoint.video.synthetic import make_homography_video

    vid = photo.stem
    path = root / "videos" / f"{vid}.avi"
    path.parent.mkdir(parents=True, exist_ok=True)
    v = make_homography_video(photo, path, num_frames=frames, fps=25, size=size)
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


def evaluate_h(videos, weights, args) -> dict:
    """Held-out wide-baseline pairs of the synthetic videos against their exact homographies."""
    import cv2

    from tiepoint import Matcher
    from tiepoint.video.synthetic import transfer_error

    overrides = [f"extractor.max_num_keypoints={args.keypoints}", "preprocessing.resize=null"]
    m = Matcher("aliked+lightglue", device="cpu", weights=weights, overrides=overrides)
    prec, correct, errs, nm = [], [], [], []
    for v, fs in videos:
        for i, j in TEST_PAIRS:
            if j >= len(v.homographies):
                continue
            r = m.match(Path(fs.folder) / f"{i}.png", Path(fs.folder) / f"{j}.png")
            lab = np.c_[r.points0, r.points1]
            H = v.gt(i, j)
            e = transfer_error(lab, H) if len(lab) else np.zeros(0)
            nm.append(len(lab))
            prec.append(float((e <= 3).mean()) if len(e) else 0.0)
            correct.append(int((e <= 3).sum()))
            err = np.inf
            if len(lab) >= 4:
                Hest, _ = cv2.findHomography(r.points0, r.points1, cv2.USAC_MAGSAC, 3.0)
                if Hest is not None:
                    w, h = v.size
                    c = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float64)
                    p = cv2.perspectiveTransform(c[None], Hest)[0]
                    q = cv2.perspectiveTransform(c[None], H)[0]
                    err = float(np.linalg.norm(p - q, axis=1).mean())
            errs.append(err)
    errs = np.array(errs)
    auc = {}
    for t in (3, 5, 10):
        # SuperGlue-style AUC of the corner error up to t px
        e = np.sort(np.r_[0.0, errs])
        rec = np.linspace(0, 1, len(e))
        last = np.searchsorted(e, t)
        x = np.r_[e[:last], t]
        y = np.r_[rec[:last], rec[last - 1]]
        auc[f"H_auc@{t}px"] = float(np.trapezoid(y, x) / t)
    return {
        "pairs": len(errs),
        "matches/pair": float(np.mean(nm)),
        "precision@3px": float(np.mean(prec)),
        "correct/pair": float(np.mean(correct)),
        **auc,
    }


def eval_pairs(weights, tag, args) -> dict:
    cmd = [sys.executable, "-m", "tiepoint.cli", "eval", "pairs", "--pipeline", "aliked+lightglue",
           "--data-root", str(args.data), "--output-dir", str(args.out / "eval"), "--tag", tag,
           "--device", "cpu"]  # fmt: skip
    if weights:
        cmd += ["--weights", str(weights)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr[-2000:])
    summary = next((args.out / "eval" / "results" / "pairs" / tag).glob("summaries.json"))
    return {"stdout": out.stdout.strip().splitlines()[-6:], **json.loads(summary.read_text())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--photos", type=Path, required=True, help="opencv-doc examples/data")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data"
    )
    ap.add_argument("--frames", type=int, default=161)
    ap.add_argument("--size", type=int, nargs=2, default=[320, 240])
    ap.add_argument("--step", type=int, default=2, help="propagation target = idx0 + step·S")
    ap.add_argument("--min-final-matches", type=int, default=128)  # 320×240 SIFT: ~600 labels/pair
    ap.add_argument("--keypoints", type=int, default=256)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--minutes", type=float, default=6.0)
    ap.add_argument("--lr", type=float, default=3e-5)
    ap.add_argument("--max-rotation", type=float, default=30.0)
    ap.add_argument("--skip-eval-pairs", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    root = args.out
    report = {"args": {k: str(v) for k, v in vars(args).items()}}
    t0 = time.time()
    vids = {}
    for split, names in (("train", TRAIN), ("val", VAL), ("test", TEST)):
        vids[split] = [
            make_video(args.photos / n, root, args.frames, tuple(args.size)) for n in names
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

    from tiepoint.config import parse_dotlist
    from tiepoint.training import train
    from tiepoint.training.checkpoints import list_checkpoints

    exp = root / "training" / "gim_aliked_lg"
    if not list(exp.glob("checkpoint_*.tar")):
        over = [
            f"data.propagate_dir={prop_dir}",
            f"data.frames_dir={root / 'frames'}",
            f"data.train_videos=[{','.join(fs.video_id for _, fs in vids['train'])}]",
            f"data.val_videos=[{','.join(fs.video_id for _, fs in vids['val'])}]",
            f"data.img_size=[{args.size[0]},{args.size[1]}]",
            f"data.max_rotation={args.max_rotation}",
            "data.batch_size=1",
            "data.num_workers=0",
            "model.extractor={name: aliked, model_name: aliked-n16,"
            f" max_num_keypoints: {args.keypoints}, detection_threshold: -1}}",
            f"model.num_keypoints={args.keypoints}",
            "model.matcher.features=aliked",
            "model.matcher.weights=aliked_lightglue",
            f"train.lr={args.lr}",
            "train.lr_schedule={type: null}",
            "train.epochs=1000",
            f"train.max_minutes={args.minutes}",
            f"train.eval_every_iter={args.eval_every}",
            "train.val_max_batches=6",
            "train.save_every_iter=1000000",
            "train.log_every_iter=10",
        ]
        t0 = time.time()
        train("gim_aliked_lg", "gim_lightglue", parse_dotlist(over), output_dir=root)
        print(f"training: {time.time() - t0:.0f} s")
    ckpt = list_checkpoints(exp)[-1][1]
    hist = json.loads((exp / "val_history.json").read_text())
    report["val_history"] = [(h["step"], h["label_recall"], h["loss/total"]) for h in hist]
    report["checkpoint"] = str(ckpt)
    print("validation (held-out video's propagated labels):", report["val_history"])

    report["test_start"] = evaluate_h(vids["test"], None, args)
    report["test_trained"] = evaluate_h(vids["test"], ckpt, args)
    print("held-out synthetic pairs, official:", report["test_start"])
    print("held-out synthetic pairs, trained: ", report["test_trained"])
    if not args.skip_eval_pairs:
        report["eval_pairs_start"] = eval_pairs(None, "official", args)
        report["eval_pairs_trained"] = eval_pairs(ckpt, "gim_trained", args)
        for k in ("eval_pairs_start", "eval_pairs_trained"):
            print(k, report[k]["stdout"])
    (root / "report.json").write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
