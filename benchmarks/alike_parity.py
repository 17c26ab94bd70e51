"""Parity of tiepoint's ALIKE with the official code (Shiaoming/ALIKE: alnet.py, soft_detect.py,
alike.py), without the official weights: the reference model gets a seeded random initialisation
(BatchNorm statistics included), its state dict is saved in the official file layout and loaded
*strictly* into ours through our loader, and both see the same real image.

Two halves in one file. The reference half runs in a separate environment with only torch and
numpy (torchvision's `resnet.conv3x3/conv1x1`, `transforms.ToTensor` and cv2 are stubbed: the
reference imports them but the code path used needs nothing else); the main half (tiepoint's
environment) starts it, runs ours and compares.

    python3 -m venv /tmp/ref-alike && /tmp/ref-alike/bin/pip install torch==2.13.0 numpy
    git clone https://github.com/Shiaoming/ALIKE /tmp/alike-src      # or a snapshot
    PYTHONPATH=src python benchmarks/alike_parity.py --ref-python /tmp/ref-alike/bin/python \\
        --alike-src /tmp/alike-src --image /work/shared/data/homography/oxford_boat/img1.png
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import types
from pathlib import Path

HERE = Path(__file__).resolve()
# (model, top_k, scores_th, n_limit, sub_pixel): the official demo's threshold mode and top-k mode
CASES = [
    ("alike-n", -1, 0.2, 5000, True),
    ("alike-n", 1000, 0.2, 5000, True),
    ("alike-n", -1, 0.2, 5000, False),
    ("alike-t", -1, 0.5, 2000, True),
    ("alike-s", 1000, 0.2, 5000, True),
    ("alike-l", -1, 0.2, 5000, True),
]


def _stub_imports() -> None:
    """torchvision/cv2 stand-ins for the few names the reference imports."""
    import torch.nn as nn

    resnet = types.ModuleType("torchvision.models.resnet")
    resnet.conv3x3 = lambda i, o, stride=1: nn.Conv2d(i, o, 3, stride, padding=1, bias=False)
    resnet.conv1x1 = lambda i, o, stride=1: nn.Conv2d(i, o, 1, stride, bias=False)
    models = types.ModuleType("torchvision.models")
    models.resnet = resnet
    transforms = types.ModuleType("torchvision.transforms")
    transforms.ToTensor = object
    tv = types.ModuleType("torchvision")
    tv.models, tv.transforms = models, transforms
    sys.modules.update(
        {
            "torchvision": tv,
            "torchvision.models": models,
            "torchvision.models.resnet": resnet,
            "torchvision.transforms": transforms,
            "cv2": types.ModuleType("cv2"),
        }
    )


def reference(src: str, image_npy: str, out_dir: str, official: str = "") -> None:
    import numpy as np
    import torch

    _stub_imports()
    sys.path.insert(0, src)
    from alike import ALike, configs

    img = np.load(image_npy)
    for i, (name, top_k, th, n_limit, sub_pixel) in enumerate(CASES):
        torch.manual_seed(i)
        cfg = {k: v for k, v in configs[name].items() if k != "model_path"}
        path = f"{official}/{name}.pth" if official else ""
        net = ALike(**cfg, top_k=top_k, scores_th=th, n_limit=n_limit, model_path=path)
        with torch.no_grad():
            if not official:
                for m in net.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean.uniform_(-0.2, 0.2)
                        m.running_var.uniform_(0.5, 2.0)
                        m.weight.uniform_(0.5, 1.5)
                        m.bias.uniform_(-0.2, 0.2)
                # random weights give logits near 0: sigmoid ≈ 0.5 everywhere, float ties decide the order
                net.convhead2.weight[-1] *= 50  # spread the scores
        net.eval()
        torch.save(net.state_dict(), f"{out_dir}/{i}.pth")
        pred = net(img, sort=True, sub_pixel=sub_pixel)
        np.savez(
            f"{out_dir}/{i}.npz",
            keypoints=pred["keypoints"],
            scores=pred["scores"],
            descriptors=pred["descriptors"],
            scores_map=pred["scores_map"],
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ref-python", required=True)
    ap.add_argument("--alike-src", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--size", type=int, nargs=2, default=[500, 370], help="W H (not /32)")
    ap.add_argument("--official", default="", help="folder with the official alike-*.pth instead")
    ap.add_argument("--keep", default=None, help="leave the files in a folder under this one")
    args = ap.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from tiepoint.models.extractors.alike import ALIKE

    img = np.asarray(Image.open(args.image).convert("RGB").resize(tuple(args.size)))
    rows = []
    with tempfile.TemporaryDirectory(dir=args.keep) as tmp:
        np.save(f"{tmp}/image.npy", img)
        cmd = [args.ref_python, str(HERE), "--reference", args.alike_src, f"{tmp}/image.npy", tmp]
        cmd += [args.official] if args.official else []
        subprocess.run(cmd, check=True)
        image = torch.from_numpy(img).float().permute(2, 0, 1)[None] / 255.0
        for i, (name, top_k, th, n_limit, sub_pixel) in enumerate(CASES):
            src = f"{args.official}/{name}.pth" if args.official else f"{tmp}/{i}.pth"
            conf = {"model_name": name, "weights": src, "subpixel": sub_pixel}
            if top_k > 0:
                conf.update(max_num_keypoints=top_k, detection_threshold=0)
            else:
                conf.update(max_num_keypoints=n_limit, detection_threshold=th)
            ours = ALIKE(conf).eval()
            with torch.no_grad():
                out = ours({"image": image})
            ref = np.load(f"{tmp}/{i}.npz")
            k, s, d = (out[x][0].numpy() for x in ("keypoints", "keypoint_scores", "descriptors"))
            same_n = len(k) == len(ref["keypoints"])
            row = {
                "model": name,
                "mode": f"top-{top_k}" if top_k > 0 else f"th {th}, limit {n_limit}",
                "subpixel": sub_pixel,
                "n_ours": len(k),
                "n_ref": len(ref["keypoints"]),
            }
            if same_n:  # pair each of ours with the nearest reference keypoint (order-free)
                kk, kr = torch.from_numpy(k).double(), torch.from_numpy(ref["keypoints"]).double()
                nn = torch.cdist(kk, kr, compute_mode="donot_use_mm_for_euclid_dist").min(1)
                j = nn.indices.numpy()
                row |= {
                    "kpt_max_px": float(nn.values.max()),
                    "nn_unique": len(set(j.tolist())) == len(j),
                    "score_max": float(np.abs(s - ref["scores"][j]).max()),
                    "desc_max": float(np.abs(d - ref["descriptors"][j]).max()),
                    "same_order": bool((j == np.arange(len(j))).all()),
                }
            rows.append(row)
            print(json.dumps(row))
    ok = all(r["n_ours"] == r["n_ref"] and r["kpt_max_px"] < 1e-3 and r["nn_unique"] for r in rows)
    print("PARITY", "OK" if ok else "FAILED")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--reference"]:
        reference(*sys.argv[2:6])
    else:
        main()
