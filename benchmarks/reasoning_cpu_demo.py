"""CPU demonstration of Descriptor Reasoning training without DINOv2 or the released weights.

Trains the reasoning head (the released architecture: 5 layers, 1 head, 256-D, semantic
conditioning) on top of frozen XFeat, with the semantic backbone that can run here: a DINOv2
state dict from `--dino PATH` when one is given, otherwise `vit_tiny14`, a small ViT of the same
interface, randomly initialised and frozen (it carries no semantics: the head can only learn from
its position/colour-dependent patch features). Features and semantic maps are cached once.

Training pairs: random homographies of the `pose/` images of the shared data (indoor ScanNet,
KITTI, MegaDepth: 53 photographs, none of them in the test set), with photometric augmentation;
ground truth as the reference builds it (each warped keypoint of image 0 → the nearest keypoint of
image 1 within 3 px). Loss: the reference's deep-supervised dual-softmax NLL; Adam 1e-4, wd 1e-5.
Held out: the 20 real homography pairs of `homography/` (Oxford + HPatches), evaluated with
mutual-NN matching of (a) the raw XFeat descriptors, (b) the untrained head, (c) the trained head.

    PYTHONPATH=src python benchmarks/reasoning_cpu_demo.py [--pairs 120] [--epochs 4] [--dino PATH]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

DATA = Path("/work/shared/data")


def gt_pairs(k0: np.ndarray, k1: np.ndarray, H: np.ndarray, th: float = 3.0) -> np.ndarray:
    """Reference GT: warped kpt0 → nearest kpt1 within `th` px (no mutual check)."""
    from tiepoint.geometry.homography import warp_points

    w = warp_points(H, k0)
    d = np.linalg.norm(w[:, None] - k1[None], axis=-1)
    j = d.argmin(1)
    ok = d[np.arange(len(k0)), j] <= th
    return np.stack([np.where(ok)[0], j[ok]], -1)


def mnn_precision(d0, d1, k0, k1, H, th=3.0):
    """(mutual matches, correct at `th` px, precision) of mutual-NN on descriptors d0, d1."""
    from tiepoint.geometry.homography import warp_points
    from tiepoint.models.matchers.reasoning_head import mutual_nn

    sim = torch.nn.functional.normalize(d0, dim=-1) @ torch.nn.functional.normalize(d1, dim=-1).T
    return _score(mutual_nn(sim[None])[0][0].numpy(), k0, k1, H, th, warp_points)


def _score(m0, k0, k1, H, th, warp_points):
    valid = m0 > -1
    err = np.linalg.norm(warp_points(H, k0[valid]) - k1[m0[valid]], axis=-1)
    n, c = int(valid.sum()), int((err <= th).sum())
    return n, c


def main(args) -> None:
    from tiepoint.datasets.homographies import Homographies
    from tiepoint.geometry.homography import scale_homography, warp_points
    from tiepoint.images import load
    from tiepoint.models import get_model
    from tiepoint.models.matchers.reasoning_head import mutual_nn, reasoning_similarity

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    xfeat = get_model(
        "extractor",
        {"name": "xfeat", "max_num_keypoints": args.keypoints, "detection_threshold": 0.0},
    ).eval()
    sem = (
        {"semantic_backbone": "dinov2_vits14", "dino_weights": args.dino}
        if args.dino
        else {"semantic_backbone": "vit_tiny14", "dino_weights": None}
    )
    model = get_model(
        "matcher",
        {
            "name": "reasoning",
            "extractor_dim": 64,
            "pretrained": False,
            "long_side": args.long_side,
            "trainable": True,
            **sem,
        },
    )

    def features(image):
        with torch.no_grad():
            p = xfeat({"image": image})
            fmap, scale = model.semantic_map(image)
        return p["keypoints"], p["descriptors"], fmap, scale

    data = Homographies(
        {
            "data_dir": str(DATA / "pose"),
            "val_size": 1,
            "train_size": args.pairs,
            "homography": {"patch_shape": [480, 360]},
            "seed": 0,
        }
    )
    ds = data.get_dataset("train")
    t0 = time.perf_counter()
    train = []
    for i in tqdm(range(len(ds)), desc="cache train features"):
        item = ds[i]
        f0, f1 = features(item["view0"]["image"][None]), features(item["view1"]["image"][None])
        pairs = gt_pairs(f0[0][0].numpy(), f1[0][0].numpy(), item["H_0to1"].double().numpy())
        if len(pairs) >= 8:
            train.append((f0, f1, torch.from_numpy(pairs)))
    t_cache = time.perf_counter() - t0

    test = []
    for line in (DATA / "homography" / "pairs.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        a, b, *h = line.split()
        im0 = load(DATA / "homography" / a, resize=args.test_size)
        im1 = load(DATA / "homography" / b, resize=args.test_size)
        H = scale_homography(np.array(h, float).reshape(3, 3), im0.scale, im1.scale)
        rgb = [im.tensor.expand(-1, 3, -1, -1) for im in (im0, im1)]
        test.append((features(rgb[0]), features(rgb[1]), H))

    def evaluate():
        model.eval()
        tot = {"raw": [0, 0], "refined": [0, 0]}
        with torch.no_grad():
            for f0, f1, H in test:
                k0, k1 = f0[0][0].numpy(), f1[0][0].numpy()
                n, c = mnn_precision(f0[1][0], f1[1][0], k0, k1, H)
                tot["raw"][0] += n
                tot["raw"][1] += c
                r0 = model.refine(None, f0[0], f0[1], fmap=f0[2], scale=f0[3])
                r1 = model.refine(None, f1[0], f1[1], fmap=f1[2], scale=f1[3])
                sim = reasoning_similarity(
                    r0["reasoning_features"],
                    r0["semantic_features"],
                    r1["reasoning_features"],
                    r1["semantic_features"],
                    True,
                )
                m0 = mutual_nn(sim)[0][0].numpy()
                n, c = _score(m0, k0, k1, H, 3.0, warp_points)
                tot["refined"][0] += n
                tot["refined"][1] += c
        return {
            k: {"matches": n, "correct@3px": c, "precision": round(c / max(n, 1), 4)}
            for k, (n, c) in tot.items()
        }

    before = evaluate()
    opt = torch.optim.Adam([p for p in model.head.parameters()], lr=args.lr, weight_decay=1e-5)
    losses = []
    t0 = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train)).tolist()
        for i in tqdm(order, desc=f"epoch {epoch}"):
            f0, f1, pairs = train[i]
            p0 = model.refine(None, f0[0], f0[1], fmap=f0[2], scale=f0[3])
            p1 = model.refine(None, f1[0], f1[1], fmap=f1[2], scale=f1[3])
            pred = {f"{k}{j}": v for j, p in enumerate((p0, p1)) for k, v in p.items()}
            loss = model.loss(pred, {"gt_pairs": [pairs]})[0]["total"].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(loss.item())
    t_train = time.perf_counter() - t0
    after = evaluate()
    k = max(1, len(losses) // 10)
    print(
        json.dumps(
            {
                "semantic_backbone": sem["semantic_backbone"]
                + ("" if args.dino else " (random, frozen)"),
                "train_pairs": len(train),
                "epochs": args.epochs,
                "steps": len(losses),
                "keypoints": args.keypoints,
                "loss_first_tenth": round(float(np.mean(losses[:k])), 4),
                "loss_last_tenth": round(float(np.mean(losses[-k:])), 4),
                "test_pairs": len(test),
                "untrained_head": before["refined"],
                "raw_xfeat": after["raw"],
                "trained_head": after["refined"],
                "seconds_cache": round(t_cache),
                "seconds_train": round(t_train),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--pairs", type=int, default=120)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--keypoints", type=int, default=512)
    p.add_argument("--long-side", type=int, default=448)
    p.add_argument("--test-size", type=int, default=640)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dino", default=None, help="a DINOv2 ViT-S/14 state dict (official layout)")
    main(p.parse_args())
