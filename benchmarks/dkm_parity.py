"""Parity of tiepoint's DKM with the reference code (Parskatt/DKM, and GIM's fork), without the
official weights: the reference model is built with a fixed random initialisation, its state dict
saved and loaded into ours through our official loader, and both `match` outputs compared.

Two halves in one file. The reference half runs in a separate environment that has the reference
code's dependencies (torch, torchvision, einops, kornia, opencv, pillow) and imports no tiepoint;
the main half (tiepoint's environment) starts it as a subprocess, then runs ours and compares.

    python3 -m venv /tmp/dkm_ref
    /tmp/dkm_ref/bin/pip install torch torchvision einops kornia pillow numpy opencv-python-headless
    git clone https://github.com/Parskatt/DKM /tmp/DKM      # and optionally
    git clone https://github.com/xuelunshen/gim /tmp/gim
    PYTHONPATH=src python benchmarks/dkm_parity.py --ref-python /tmp/dkm_ref/bin/python \\
        --dkm-src /tmp/DKM [--gim-src /tmp/gim] [--out /tmp/dkm_parity]

Preprocessing: the reference `match` resizes 8-bit PIL images (bicubic) while ours takes [0, 1]
tensors. For the network comparison the reference's `get_tuple_transform_ops` is replaced by the
op ours uses (antialiased bicubic on the float image, clipped, ImageNet-normalised), so the two
see identical inputs; everything else in the reference `match` runs unmodified. The `pil` case
runs the reference untouched and shows what the resize difference alone costs.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
DATA = Path("/work/shared/data/homography/oxford_bikes")


def randomize_batchnorm(model, torch) -> None:
    """Make BatchNorm layers non-trivial (random affine and running statistics), so the comparison
    also checks that every BN sits where the reference has it."""
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)


_TORCHVISION_SCHEMAS = []  # the library object must stay alive for its schemas to stay defined


def allow_torchvision_import(torch) -> None:
    """torchvision's CUDA wheel cannot load its C ops on a CPU-only torch; DKM needs none of them,
    but `import torchvision` registers fake kernels for nms/qnms, which must exist as schemas."""
    if _TORCHVISION_SCHEMAS:
        return
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SCHEMAS.append(lib)


def build_reference_dkmv3(src: str, h: int, w: int, upsample_preds: bool, torch):
    """The reference DKMv3 (checkout at `src`) at seed 0, without the weights it would load."""
    allow_torchvision_import(torch)
    sys.path.insert(0, src)
    import dkm.models.dkm as dkm_mod
    from dkm.models.model_zoo.DKMv3 import DKMv3

    matcher = dkm_mod.RegressionMatcher
    original_load = matcher.load_state_dict
    matcher.load_state_dict = lambda self, *a, **k: None  # DKMv3() loads the weights it gets
    try:
        torch.manual_seed(0)
        return DKMv3(None, h, w, upsample_preds=upsample_preds, device=torch.device("cpu"))
    finally:
        matcher.load_state_dict = original_load


def reference_half(args) -> None:
    """Runs in the reference environment: build, save state, run `match`, save outputs."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from PIL import Image

    allow_torchvision_import(torch)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def to_tensor(im):
        return torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255).permute(2, 0, 1)[
            None
        ]

    def our_transform_ops(resize=None, normalize=True, unscale=False):
        def apply(ims):
            res = []
            for im in ims:
                t = to_tensor(im)
                if resize and tuple(t.shape[-2:]) != tuple(resize):
                    t = F.interpolate(
                        t, size=resize, mode="bicubic", align_corners=False, antialias=True
                    ).clamp(0, 1)
                res.append(((t - mean) / std)[0])
            return res

        return apply

    im0, im1 = Image.open(args.image0).convert("RGB"), Image.open(args.image1).convert("RGB")
    timings = {}
    if args.variant == "dkm":
        model = build_reference_dkmv3(args.src, 540, 720, True, torch)
        import dkm.models.dkm as dkm_mod

        randomize_batchnorm(model, torch)
        torch.save(model.state_dict(), out / "ref_state.pth")
        original_ops = dkm_mod.get_tuple_transform_ops
        for case, upsample, ops in [
            ("upsample", True, our_transform_ops),
            ("no_upsample", False, our_transform_ops),
            ("pil_upsample", True, original_ops),
        ]:
            if case not in args.cases:
                continue
            model.upsample_preds = upsample
            dkm_mod.get_tuple_transform_ops = ops
            t = time.time()
            warp, cert = model.match(im0, im1, device=torch.device("cpu"))
            timings[case] = time.time() - t
            torch.save({"warp": warp, "certainty": cert}, out / f"ref_{case}.pt")
    else:  # GIM's fork: tensors in [0,1], no normalisation, black-pixel mask, 672×896 → 1152×1536
        sys.path.insert(0, args.src)
        from networks.dkm.models.model_zoo.DKMv3 import DKMv3

        torch.manual_seed(0)
        model = DKMv3(weights=None, h=args.gim_size[0], w=args.gim_size[1])
        model.upsample_res = tuple(args.gim_size[2:])
        randomize_batchnorm(model, torch)
        # GIM's Lightning checkpoint layout: `model.` prefix, plus a classifier the loader drops
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state["model.encoder.net.fc.weight"] = torch.zeros(1000, 2048)
        state["model.encoder.net.fc.bias"] = torch.zeros(1000)
        torch.save({"state_dict": state}, out / "ref_state.pth")
        x0, x1 = to_tensor(im0), to_tensor(im1)
        x0[..., :40, :] = 0  # a black band, to exercise the black-pixel mask
        torch.save({"image0": x0, "image1": x1}, out / "inputs.pt")
        t = time.time()
        warp, cert = model.match(x0, x1)
        timings["gim_upsample"] = time.time() - t
        torch.save({"warp": warp, "certainty": cert}, out / "ref_gim_upsample.pt")
    (out / "ref_timings.json").write_text(json.dumps(timings))


def compare(ref, ours) -> dict:
    w_r, c_r = ref["warp"].float(), ref["certainty"].float()
    w_o, c_o = ours["warp"][0].float(), ours["certainty"][0].float()
    if w_r.shape != w_o.shape:
        return {"shape_ref": list(w_r.shape), "shape_ours": list(w_o.shape)}
    dw = (w_r - w_o).abs()
    dc = (c_r - c_o).abs()
    return {
        "shape": list(w_r.shape),
        "warp_max_abs": float(dw.max()),
        "warp_mean_abs": float(dw.mean()),
        "warp_p99_abs": float(dw.flatten().kthvalue(int(0.99 * dw.numel())).values),
        "cert_max_abs": float(dc.max()),
        "cert_mean_abs": float(dc.mean()),
        "cert_ref_mean": float(c_r.mean()),
        "cert_ref_nonzero": float((c_r > 0).float().mean()),
        "warp_ref_std": float(w_r[..., 2:].std()),
    }


def main_half(args) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from tiepoint.models.dense.dkm import DKM

    torch.set_grad_enabled(False)
    results = {}
    for variant, src in (("dkm", args.dkm_src), ("gim", args.gim_src)):
        if not src:
            continue
        out = Path(args.out) / variant
        cmd = [args.ref_python, str(HERE), "--reference", "--variant", variant, "--src", src]
        cmd += ["--out", str(out), "--image0", args.image0, "--image1", args.image1]
        cmd += ["--cases", *args.cases, "--gim-size", *map(str, args.gim_size)]
        print("reference:", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        ref_times = json.loads((out / "ref_timings.json").read_text())
        if variant == "dkm":
            imgs = [
                torch.from_numpy(
                    np.asarray(Image.open(p).convert("RGB"), np.float32) / 255
                ).permute(2, 0, 1)[None]
                for p in (args.image0, args.image1)
            ]
            cases = [
                ("upsample", [864, 1152]),
                ("no_upsample", None),
                ("pil_upsample", [864, 1152]),
            ]
            ours = {}  # ours sees the same input in the two upsample cases: run it once
            for case, up in cases:
                if case not in args.cases:
                    continue
                if str(up) not in ours:
                    model = DKM(
                        {
                            "preset": "outdoor",
                            "weights": str(out / "ref_state.pth"),
                            "upsample_res": up,
                        }
                    ).eval()
                    t = time.time()
                    ours[str(up)] = model({"image0": imgs[0], "image1": imgs[1]}), time.time() - t
                pred, dt = ours[str(up)]
                ref = torch.load(out / f"ref_{case}.pt")
                results[f"dkm_{case}"] = {
                    **compare(ref, pred),
                    "t_ours_s": round(dt, 1),
                    "t_ref_s": round(ref_times.get(case, float("nan")), 1),
                }
                print(case, json.dumps(results[f"dkm_{case}"]), flush=True)
        else:
            inputs = torch.load(out / "inputs.pt")
            h, w, uh, uw = args.gim_size
            conf = {"resize": [h, w], "upsample_res": [uh, uw]}
            model = DKM({"preset": "gim", "weights": str(out / "ref_state.pth"), **conf}).eval()
            t = time.time()
            pred = model(inputs)
            dt = time.time() - t
            ref = torch.load(out / "ref_gim_upsample.pt")
            results["gim_upsample"] = {**compare(ref, pred), "t_ours_s": round(dt, 1)}
            print("gim", json.dumps(results["gim_upsample"]), flush=True)
    path = Path(args.out) / "parity.json"
    path.write_text(json.dumps(results, indent=1))
    print("wrote", path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", action="store_true", help="internal: run the reference half")
    p.add_argument("--variant", choices=["dkm", "gim"], default="dkm")
    p.add_argument("--src", help="internal: reference checkout for --reference")
    p.add_argument("--ref-python", default="/tmp/dkm_ref/bin/python")
    p.add_argument("--dkm-src", default="/tmp/DKM", help="Parskatt/DKM checkout ('' to skip)")
    p.add_argument("--gim-src", default="", help="xuelunshen/gim checkout (optional)")
    p.add_argument("--image0", default=str(DATA / "img1.png"))
    p.add_argument("--image1", default=str(DATA / "img3.png"))
    p.add_argument("--out", default="/tmp/dkm_parity")
    p.add_argument(
        "--gim-size",
        nargs=4,
        type=int,
        default=[672, 896, 1152, 1536],
        metavar=("H", "W", "UP_H", "UP_W"),
        help="GIM internal and upsample sizes (GIM's demo: 672 896 1152 1536)",
    )
    p.add_argument(
        "--cases", nargs="+", default=["upsample", "no_upsample", "pil_upsample"], help="DKM cases"
    )
    args = p.parse_args()
    (reference_half if args.reference else main_half)(args)


if __name__ == "__main__":
    main()
