"""Parity of tiepoint's GlueStick with the official code (cvg/GlueStick) on random weights.

Two steps, two interpreters (the reference never runs inside tiepoint's environment):

  1. inputs (tiepoint venv): ALIKED-n16 keypoints/descriptors on a real image pair, OpenCV LSD
     lines with endpoint descriptors sampled from ALIKED's dense map; endpoints closer than 3 px are
     merged into shared junctions (as the reference wireframe does), so line message passing sees
     junctions with several lines.
       PYTHONPATH=src python benchmarks/gluestick_parity.py inputs OUT.pt --data /work/shared/data
  2. reference (throwaway venv with torch, omegaconf; cvg/GlueStick's `gluestick/` on PYTHONPATH):
       PYTHONPATH=REF python benchmarks/gluestick_parity.py reference OUT.pt
     builds the official model (random weights, random BatchNorm statistics and bin scores), saves
     its state dict and its outputs into OUT.pt.
  3. compare (tiepoint venv): loads that state dict strictly into ours and compares, for both input
     forms (reference layout with `lines_junc_idx`, and `line_descriptors`):
       PYTHONPATH=src python benchmarks/gluestick_parity.py compare OUT.pt
"""

from __future__ import annotations

import argparse
import sys

import torch

DIM = 128
THRESHOLDS = (0.2, 0.0)


def merge_endpoints(lines, radius=3.0):
    """Greedy clustering of endpoints within `radius` → (junctions (J,2), junc_idx (L,2))."""
    pts = lines.reshape(-1, 2)
    label = torch.full((len(pts),), -1, dtype=torch.long)
    centres = []
    for i in range(len(pts)):
        if label[i] >= 0:
            continue
        near = ((pts - pts[i]).norm(dim=-1) < radius) & (label < 0)
        label[near] = len(centres)
        centres.append(pts[near].mean(0))
    return torch.stack(centres), label.reshape(-1, 2)


def make_inputs(args):
    import cv2
    import numpy as np

    from tiepoint.models.extractors.aliked import ALIKED

    root = f"{args.data}/homography/oxford_boat"
    model = ALIKED({"model_name": "aliked-n16", "max_num_keypoints": 512}).eval()
    data = {}
    for i, name in enumerate(["img1.png", "img2.png"]):
        gray = cv2.imread(f"{root}/{name}", cv2.IMREAD_GRAYSCALE)
        gray = cv2.resize(gray, (gray.shape[1] // 2, gray.shape[0] // 2))
        h, w = gray.shape
        segs = cv2.createLineSegmentDetector().detect(gray)[0].reshape(-1, 4)  # x0 y0 x1 y1
        length = np.hypot(segs[:, 2] - segs[:, 0], segs[:, 3] - segs[:, 1])
        keep = np.argsort(-length)[:80]
        lines = torch.from_numpy(segs[keep]).float().reshape(-1, 2, 2)
        lines[..., 0].clamp_(0, w - 1)
        lines[..., 1].clamp_(0, h - 1)
        lscore = torch.from_numpy(length[keep] / length[keep].max()).float()
        img = torch.from_numpy(gray).float()[None, None] / 255
        with torch.no_grad():
            out = model({"image": img})
            _, maps = model.dense(img.expand(-1, 3, -1, -1))
            junc, junc_idx = merge_endpoints(lines)
            jdesc = torch.nn.functional.normalize(maps.sample(junc[None])[0].T, dim=-1)
            edesc = torch.nn.functional.normalize(maps.sample(lines.reshape(1, -1, 2))[0].T, dim=-1)
        lines = junc[junc_idx]  # lines snapped to their junctions, as the reference wireframe
        data.update(
            {
                f"kp{i}": out["keypoints"][0],
                f"kps{i}": out["keypoint_scores"][0],
                f"desc{i}": out["descriptors"][0],
                f"lines{i}": lines,
                f"lscore{i}": lscore,
                f"junc{i}": junc,
                f"junc_idx{i}": junc_idx,
                f"jdesc{i}": jdesc,
                f"edesc{i}": edesc,
                f"size{i}": torch.tensor([float(w), float(h)]),
            }
        )
        print(
            f"image {i}: {len(out['keypoints'][0])} keypoints, {len(lines)} lines, "
            f"{len(junc)} junctions"
        )
    torch.save(data, args.out)


def reference_layout(d, i):
    """Keypoints = [junctions, keypoints] with their scores/descriptors, as the wireframe does."""
    nj = len(d[f"junc{i}"])
    junc_score = torch.zeros(nj).scatter_reduce(
        0,
        d[f"junc_idx{i}"].flatten(),
        d[f"lscore{i}"].repeat_interleave(2),
        "mean",
        include_self=False,
    )
    return {
        f"keypoints{i}": torch.cat([d[f"junc{i}"], d[f"kp{i}"]])[None],
        f"keypoint_scores{i}": torch.cat([junc_score, d[f"kps{i}"]])[None],
        f"descriptors{i}": torch.cat([d[f"jdesc{i}"], d[f"desc{i}"]])[None],
        f"lines{i}": d[f"lines{i}"][None],
        f"line_scores{i}": d[f"lscore{i}"][None],
        f"lines_junc_idx{i}": d[f"junc_idx{i}"][None],
        f"image_size{i}": d[f"size{i}"][None],
    }


def run_reference(args):
    from gluestick.models.gluestick import GlueStick as Ref

    torch.manual_seed(0)
    conf = {"input_dim": DIM, "descriptor_dim": DIM, "weights": None}
    ref = Ref(conf)
    with torch.no_grad():
        for name, buf in ref.named_buffers():
            if name.endswith("running_mean"):
                buf.normal_(0, 0.1)
            elif name.endswith("running_var"):
                buf.uniform_(0.5, 1.5)
        ref.bin_score.fill_(0.7)
        ref.line_bin_score.fill_(1.3)
    ref.eval()
    d = torch.load(args.out)
    data = {}
    for i in "01":
        x = reference_layout(d, i)
        x[f"descriptors{i}"] = x[f"descriptors{i}"].mT  # the official code takes (B,D,N)
        data.update(x)
    d["ref_state"] = ref.state_dict()
    for th in THRESHOLDS:
        model = Ref({**conf, "filter_threshold": th})
        model.load_state_dict(d["ref_state"])
        with torch.no_grad():
            pred = model.eval()._forward(data)
        d[f"ref_pred{th}"] = {k: v for k, v in pred.items() if torch.is_tensor(v)}
    torch.save(d, args.out)
    print("reference outputs:", sorted(d[f"ref_pred{th}"]))


def compare(args):
    from tiepoint.models.matchers.gluestick import GlueStick

    d = torch.load(args.out)
    torch.save(d["ref_state"], args.out + ".state.pt")  # the official layout, loaded strictly
    data = {**reference_layout(d, "0"), **reference_layout(d, "1")}
    n = [int(data[f"keypoints{i}"].shape[1]) for i in "01"]
    nl = [int(data[f"lines{i}"].shape[1]) for i in "01"]
    print(f"nodes {n[0]} x {n[1]}, lines {nl[0]} x {nl[1]}")
    print(
        "| threshold | what | max abs diff log-assignment | matches ref / ours "
        "| differing matches0 | max abs diff score |"
    )
    print("|---|---|---|---|---|---|")
    for th in THRESHOLDS:
        ours = GlueStick({"descriptor_dim": DIM, "filter_threshold": th}).eval()
        ours.load_weights(args.out + ".state.pt")
        with torch.no_grad():
            pred = ours(data)
        ref = d[f"ref_pred{th}"]
        for what, pre, rpre in [("points", "", ""), ("lines", "line_", "line_")]:
            la = (pred[f"{pre}log_assignment"] - ref[f"{rpre}log_assignment"]).abs().max()
            m, rm = pred[f"{pre}matches0"], ref[f"{rpre}matches0"]
            valid = rm >= 0
            ds = (pred[f"{pre}matching_scores0"] - ref[f"{rpre}match_scores0"])[valid].abs()
            ds = f"{ds.max().item():.1e}" if valid.any() else "-"
            print(
                f"| {th} | {what} | {la.item():.1e} | {int(valid.sum())} / {int((m >= 0).sum())}"
                f" | {int((m != rm).sum())} | {ds} |"
            )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("step", choices=["inputs", "reference", "compare"])
    p.add_argument("out")
    p.add_argument("--data", default="/work/shared/data")
    args = p.parse_args()
    {"inputs": make_inputs, "reference": run_reference, "compare": compare}[args.step](args)


if __name__ == "__main__":
    sys.exit(main())
