"""Parity of tiepoint's DINOv2 (`models/backbones/dinov2.py`) with facebookresearch/dinov2.

The official weights are not reachable here, so the reference hub model is built with
`pretrained=False`, its random initialisation perturbed (LayerNorms, LayerScale, class token:
values the official init leaves at 1/0), its state dict saved and loaded *strictly* into ours; then
`get_intermediate_layers(n=1, reshape=True, return_class_token=True)` of both are compared on a real
image at several sizes (square 518 = the no-interpolation branch, and non-square sizes that
exercise the positional-embedding interpolation with its +0.1 offset).

Two halves. The reference half runs in an environment with only torch + numpy + pillow and the
dinov2 source tree on its path (xFormers absent: the reference falls back to plain attention):

    python3 -m venv /tmp/ref-reason && /tmp/ref-reason/bin/pip install torch numpy pillow omegaconf
    git clone https://github.com/facebookresearch/dinov2 /tmp/ref-src/dinov2
    PYTHONPATH=src python benchmarks/dinov2_parity.py --ref-python /tmp/ref-reason/bin/python \\
        --dinov2-src /tmp/ref-src/dinov2 [--arch dinov2_vits14] [--out /tmp/dinov2_parity]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
IMAGE = Path("/work/shared/data/homography/oxford_bikes/img1.png")
SIZES = [(518, 518), (336, 448), (476, 644)]  # (H, W), multiples of 14


def load_image(path: Path, h: int, w: int):
    import numpy as np
    import torch
    from PIL import Image

    img = Image.open(path).convert("RGB").resize((w, h), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float() / 255


def reference(args) -> None:
    import torch

    sys.path.insert(0, args.dinov2_src)
    from dinov2.hub import backbones

    torch.manual_seed(0)
    model = getattr(backbones, args.arch)(pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or ".ls" in name or name == "cls_token":
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    out = Path(args.out)
    torch.save(model.state_dict(), out / "ref_state.pt")
    results = {}
    with torch.no_grad():
        for h, w in SIZES:
            x = load_image(IMAGE, h, w)
            patches, cls = model.get_intermediate_layers(
                x, n=1, reshape=True, return_class_token=True
            )[0]
            results[f"{h}x{w}"] = {"patches": patches, "cls": cls}
    torch.save(results, out / "ref_tokens.pt")


def main(args) -> None:
    import time

    import torch

    from tiepoint.models.backbones.dinov2 import DINOv2
    from tiepoint.weights import load_torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [args.ref_python, str(HERE), "--reference", "--dinov2-src", args.dinov2_src]
    subprocess.run(cmd + ["--arch", args.arch, "--out", str(out)], check=True)
    ours = DINOv2(args.arch).eval()
    ours.load_state_dict(load_torch(out / "ref_state.pt"), strict=True)
    ref = load_torch(out / "ref_tokens.pt")
    rows = {}
    with torch.no_grad():
        for h, w in SIZES:
            x = load_image(IMAGE, h, w)
            t = time.perf_counter()
            patches, cls = ours.last_patch_tokens(x, with_class_token=True)
            r = ref[f"{h}x{w}"]
            assert patches.shape == r["patches"].shape, (patches.shape, r["patches"].shape)
            rows[f"{h}x{w}"] = {
                "shape": list(patches.shape),
                "max_abs_patch": (patches - r["patches"]).abs().max().item(),
                "max_abs_cls": (cls - r["cls"]).abs().max().item(),
                "patch_scale": r["patches"].abs().max().item(),
                "seconds_ours": round(time.perf_counter() - t, 2),
            }
    print(json.dumps({"arch": args.arch, "torch": torch.__version__, "sizes": rows}, indent=1))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--reference", action="store_true", help="(internal) run the reference half")
    p.add_argument("--ref-python", default="/tmp/ref-reason/bin/python")
    p.add_argument("--dinov2-src", default="/tmp/ref-src/dinov2")
    p.add_argument("--arch", default="dinov2_vits14")
    p.add_argument("--out", default="/tmp/dinov2_parity")
    a = p.parse_args()
    reference(a) if a.reference else main(a)
