"""The dense CPU demonstration (slow), reduced: a width/depth-reduced DKM (frozen pretrained XFeat
encoder, decoder from random initialisation) trained on synthetic homographies of real photographs;
its validation EPE falls and PCK rises, and through `tiepoint.match` and `tiepoint eval pairs` its
checkpoint's matches on held-out real pairs lie far closer to the ground-truth homography than the
untrained network's (median error < 0.6×; measured about a third).

Images: the opencv-doc photographs (tests/conftest.py `opencv_doc_images`; Leuven and Graffiti
excluded from training). Reduced configuration (the test's only; the preset `dkm_cpu_demo` and the
runs docs/dkm.md "CPU demonstration" records are unchanged): views and network input 192×128
instead of 256×192, a fixed budget of 100 steps (not minutes, so the claims do not depend on the
machine's speed) and 1000 sampled matches instead of 2000 / 5000 (DKM's KDE sampling is quadratic
in them): about 75 s on 2 idle cores. That model learns the coarse warp only, so the real-pair
claims are on the matches' median error, not on a RANSAC fit (see check_checkpoint).
TIEPOINT_DEMO_MINUTES gives a wall-clock budget instead.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import read_h
from omegaconf import OmegaConf
from PIL import Image

pytestmark = pytest.mark.slow

EVAL_PAIRS = ("oxford_leuven", "oxford_bikes")  # held out: not in the training photographs
# the test's smaller views and network input (h, w divisible by 32 for the XFeat encoder)
REDUCED = [
    "data.homography.patch_shape=[192,128]",
    "model.dense.resize=[128,192]",
    "data.load_size=384",
]
STEPS = 100
NUM_MATCHES = 1000  # sampled per pair in the real-pair checks


def match_errors(weights, pipeline, seq: Path) -> tuple[float, float]:
    """img1 → img2 through `tiepoint.match`: the median distance (original pixels) from each
    match's image-2 point to where the ground-truth homography takes its image-1 point, and the
    corner error of the homography RANSAC fits to the matches (inf when none is fitted)."""
    from helpers import gt_warp

    import tiepoint
    from tiepoint.geometry.homography import homography_corner_error

    r = tiepoint.match(
        seq / "img1.png", seq / "img2.png", pipeline=pipeline, device="cpu", weights=weights
    )
    H_gt = read_h(seq / "H1to2p")
    median = float(np.median(np.linalg.norm(gt_warp(r.points0, H_gt) - r.points1, axis=1)))
    H, _ = r.homography(estimator="opencv", threshold=3.0)
    if H is None:
        return median, float("inf")
    return median, homography_corner_error(H, H_gt, Image.open(seq / "img1.png").size)


def small_pairs_root(data_dir: Path, root: Path) -> Path:
    """A `pairs` benchmark root with the homography pairs img1→img2, img1→img3 of EVAL_PAIRS."""
    (root / "homography").mkdir(parents=True)
    lines = []
    for line in (data_dir / "homography" / "pairs.txt").read_text().splitlines():
        f = line.split()
        if (
            f
            and f[0].split("/")[0] in EVAL_PAIRS
            and f[1].rsplit("/", 1)[-1] in ("img2.png", "img3.png")
        ):
            lines.append(line)
    for seq in EVAL_PAIRS:
        (root / "homography" / seq).symlink_to(data_dir / "homography" / seq)
    (root / "homography" / "pairs.txt").write_text("\n".join(lines) + "\n")
    return root


def test_dkm_cpu_demo(tmp_path, data_dir, official_weights, opencv_doc_images):
    from tiepoint.config import parse_dotlist
    from tiepoint.training import train

    official_weights("xfeat")
    out = Path(os.environ.get("TIEPOINT_DEMO_OUTPUTS", tmp_path / "outputs"))
    minutes = os.environ.get("TIEPOINT_DEMO_MINUTES")
    if minutes:
        budget = [f"train.max_minutes={float(minutes)}"]
    else:
        budget = ["train.max_minutes=null", f"train.max_iterations={STEPS}"]
        budget.append("train.eval_every_iter=20")
    exp = train(
        "dkm_cpu_demo",
        "dkm_cpu_demo",
        parse_dotlist([f"data.data_dir={opencv_doc_images}", *REDUCED, *budget]),
        output_dir=out,
        progress=False,
    )
    hist = json.loads((exp / "val_history.json").read_text())
    first, last = hist[0], hist[-1]
    best = min(hist, key=lambda h: h["epe"])
    ident = identity_metrics(exp)
    print("DKM CPU demo:", json.dumps({"first": first, "last": last, "identity": ident}))
    # the finest warp against the exact GT warp, in pixels of the 192×128 image 1: the EPE falls
    # well below both the untrained model's and the identity warp's (it learned the homographies)
    assert last["step"] == STEPS or minutes
    assert best["epe"] < 0.6 * first["epe"] and best["epe"] < 0.75 * ident["epe"], (first, best)
    assert last["epe"] < 0.75 * first["epe"], (first["epe"], last["epe"])
    for t in (1, 3, 5):
        assert max(h[f"pck@{t}"] for h in hist) > 2 * first[f"pck@{t}"], t
    assert last["pck@3"] > 5 * first["pck@3"], (first["pck@3"], last["pck@3"])
    assert max(h["pck@3"] for h in hist) > ident["pck@3"], ident

    check_checkpoint(exp / "checkpoint_best.tar", data_dir, out, tmp_path / "pairs")


def check_checkpoint(ckpt: Path, data_dir: Path, out: Path, pairs_root: Path) -> None:
    """The trained checkpoint against the same network untrained, on held-out real pairs."""
    from tiepoint.evaluation.runner import run
    from tiepoint.training.checkpoints import load_checkpoint

    arch = load_checkpoint(ckpt)["conf"]["model"]["dense"]
    untrained = {"dense": {**arch, "num_matches": NUM_MATCHES}}  # same network, no trained weights
    pipe = {"preprocessing": {"resize": 1024}, "dense": {"name": "dkm", "num_matches": NUM_MATCHES}}
    # 100 steps at 192×128 learn the coarse warp (one network pixel is ~5 px of these ~900-px
    # images): the matches' median error against the ground truth falls to about a third of the
    # untrained network's on every held-out pair (measured 0.31-0.38 over two training seeds).
    # Few matches are within 3 px yet, so RANSAC's fit is luck (a second seed: Bikes 558 vs
    # 617 px corner error) and is only printed (docs/dkm.md: 12 minutes register Leuven to 2.3 px).
    for seq in EVAL_PAIRS:
        torch.manual_seed(0)  # the untrained decoder's random initialisation
        before = match_errors(None, untrained, data_dir / "homography" / seq)
        after = match_errors(ckpt, pipe, data_dir / "homography" / seq)
        print(
            f"{seq} img1→img2: median match error untrained {before[0]:.1f} px, trained "
            f"{after[0]:.1f} px; RANSAC corner error {before[1]:.1f} → {after[1]:.1f} px"
        )
        assert after[0] < 0.6 * before[0], (seq, before, after)

    # `tiepoint eval pairs` on the held-out pairs (img1→img2, img1→img3), trained vs untrained:
    # the same median match error, from the predictions the runner saved.
    root = small_pairs_root(data_dir, pairs_root)
    n = [f"dense.num_matches={NUM_MATCHES}"]
    summ, d = run(
        "pairs", "dkm", overrides=n, data_root=root, weights=ckpt, output_dir=out, progress=False
    )
    torch.manual_seed(0)
    ref, d_ref = run(
        "pairs", {"dense": {**arch, "num_matches": NUM_MATCHES}}, tag="dkm_untrained",
        data_root=root, output_dir=out, progress=False,
    )  # fmt: skip
    keys = ("mH_error_dlt", "mH_error_ransac", "mprec@1px", "mprec@3px")
    print("eval pairs:", {k: (round(summ[k], 4), round(ref[k], 4)) for k in keys})
    assert (d / "summaries.json").exists() and summ["mnum_matches"] == NUM_MATCHES
    trained, untrained = median_match_errors(d, data_dir), median_match_errors(d_ref, data_dir)
    print("median match error (px), trained vs untrained:", trained, untrained)
    assert len(trained) == 4 and trained.keys() == untrained.keys()
    for pair, err in trained.items():
        assert err < 0.6 * untrained[pair], (pair, err, untrained[pair])


def median_match_errors(results: Path, data_dir: Path) -> dict:
    """{pair: median distance (px) from each saved match's image-2 point to where the ground-truth
    homography takes its image-1 point}, from an eval run's predictions.h5."""
    import h5py
    from helpers import gt_warp

    out = {}
    with h5py.File(results / "predictions.h5", "r") as f:
        for key, g in f.items():  # "homography|<seq>|img1.png <seq>|img<k>.png"
            name0, name1 = key.split(" ")
            seq, k = name0.split("|")[1], name1.rsplit("|", 1)[-1][len("img") : -len(".png")]
            H = read_h(data_dir / "homography" / seq / f"H1to{k}p")
            m = g["matches0"][()]
            p0, p1 = g["keypoints0"][()][m > -1], g["keypoints1"][()][m[m > -1]]
            out[f"{seq} 1→{k}"] = float(np.median(np.linalg.norm(gt_warp(p0, H) - p1, axis=1)))
    return out


def identity_metrics(exp: Path) -> dict:
    """EPE / PCK of the identity warp on the experiment's validation pairs (a floor to beat)."""
    from tiepoint.datasets import get_dataset
    from tiepoint.geometry.dense_gt import dense_gt, normalized_grid
    from tiepoint.models.dense.losses import dense_metrics
    from tiepoint.training.checkpoints import load_checkpoint

    conf = OmegaConf.create(load_checkpoint(exp / "checkpoint_best.tar")["conf"]["data"])
    per_pair = []
    for batch in get_dataset(conf).get_data_loader("val"):
        img1 = batch["view1"]["image"]
        b, h, w = img1.shape[0], img1.shape[-2], img1.shape[-1]
        gt, prob = dense_gt(batch, (h, w))
        per_pair.append(dense_metrics(normalized_grid(b, h, w, dtype=gt.dtype), gt, prob, (w, h)))
    return {k: float(torch.cat([m[k] for m in per_pair]).nanmean()) for k in per_pair[0]}
