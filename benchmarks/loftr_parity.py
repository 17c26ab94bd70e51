"""Parity of tiepoint's LoFTR with the reference code, on random weights.

Vanilla LoFTR is compared with kornia's port (`kornia.feature.LoFTR`, a tiepoint dependency);
GIM's variant with GIM's own code (`xuelunshen/gim`, `networks/loftr`). Each reference model is
built with a fixed random initialisation (every BatchNorm given random affine parameters and
running statistics, so a misplaced BN would show), its state dict written in the official layout
(`{"state_dict": {"matcher.<key>": ...}}` for LoFTR, `"model.<key>"` for GIM) and loaded strictly
into ours through our official loader. Both run on the same real pair (Oxford bikes img1/img3,
resized to a multiple of 8, gray for LoFTR, RGB for GIM); the coarse confidence matrix, the
matches and the fine coordinates are compared. Ours runs `match_network`, the reference-equivalent
forward on network-size inputs.

GIM's code needs einops (and `kornia.utils.grid`, which kornia 0.9 no longer has: shimmed here).
A throwaway venv that sees tiepoint's packages is enough:

    python -m venv /tmp/ref-loftr
    echo <tiepoint venv>/lib/python3.11/site-packages > /tmp/ref-loftr/lib/python3.11/site-packages/main.pth
    /tmp/ref-loftr/bin/pip install einops
    mkdir /tmp/ref-loftr/gim && git -C <gim clone> archive HEAD networks | tar x -C /tmp/ref-loftr/gim
    PYTHONPATH=src /tmp/ref-loftr/bin/python benchmarks/loftr_parity.py --gim-root /tmp/ref-loftr/gim
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
from PIL import Image

DATA = Path("/work/shared/data/homography/oxford_bikes")
DTYPE = torch.float32  # --float64: both models and inputs in double (rounding vs. real differences)


def randomize_batchnorm(model) -> None:
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = 0.5 + torch.rand(n, generator=g)
            m.bias.data = 0.1 * torch.randn(n, generator=g)
            m.running_mean = 0.1 * torch.randn(n, generator=g)
            m.running_var = 0.5 + torch.rand(n, generator=g)


def load_pair(long_side: int, rgb: bool, names=("img1.png", "img3.png")):
    out = []
    for name in names:
        im = Image.open(DATA / name).convert("RGB" if rgb else "L")
        s = long_side / max(im.size)
        w, h = (int(round(v * s)) // 8 * 8 for v in im.size)
        a = np.asarray(im.resize((w, h), Image.BILINEAR), np.float32) / 255.0
        t = torch.from_numpy(a).permute(2, 0, 1) if rgb else torch.from_numpy(a)[None]
        out.append(t[None])
    return out[0], out[1]


def compare(ref: dict, ours: dict) -> dict:
    """ref/ours: conf_matrix, kpts0, kpts1 (fine), mconf, b_ids."""
    dc = (ref["conf_matrix"] - ours["conf_matrix"]).abs()
    k0r, k0o = ref["kpts0"].double(), ours["kpts0"].double()
    same = len(k0r) == len(k0o) and bool((k0r == k0o).all())
    row = {
        "coarse_cells": int(ref["conf_matrix"].shape[1]),
        "conf_max_abs": float(dc.max()),
        "conf_max_rel": float((dc / ref["conf_matrix"].abs().clamp(min=1e-12)).max()),
        "conf_max": float(ref["conf_matrix"].max()),
        "matches_ref": len(k0r),
        "matches_ours": len(k0o),
        "same_coarse_matches": same,
    }
    if same and len(k0r):
        row["fine_kpts1_max_abs_px"] = float((ref["kpts1"] - ours["kpts1"]).abs().max())
        row["fine_kpts1_mean_abs_px"] = float((ref["kpts1"] - ours["kpts1"]).abs().mean())
        row["mconf_max_abs"] = float((ref["mconf"] - ours["mconf"]).abs().max())
        row["displacement_px_max"] = float((ref["kpts1"] - ref["kpts0"]).abs().max())
    return row


def ours_run(model, x0, x1) -> dict:
    with torch.inference_mode():
        p = model.match_network(x0, x1)
    return {
        "conf_matrix": p["conf_matrix"],
        "kpts0": p["keypoints0_net"],
        "kpts1": p["keypoints1_net"],
        "mconf": p["confidence"],
    }


def forced_cells(hw, border: int = 2):
    """Every cell off the border, matched to the same cell of the other image (same size)."""
    h, w = hw
    r, c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    keep = ((r >= border) & (r < h - border) & (c >= border) & (c < w - border)).reshape(-1)
    ids = torch.nonzero(keep)[:, 0]
    return torch.zeros_like(ids), ids, ids.clone()


def coarse_points(ids, w):
    return torch.stack([ids % w, ids // w], 1).float() * 8


def hook(ref) -> dict:
    """Capture the reference's backbone maps, transformed tokens and confidence matrix."""
    cap = {}
    ref.backbone.register_forward_hook(lambda m, a, out: cap.update(coarse=out[0], fine=out[1]))
    ref.loftr_coarse.register_forward_hook(lambda m, a, out: cap.update(tokens=out))
    ref.coarse_matching.register_forward_hook(
        lambda m, a, out: cap.update(conf_matrix=a[2]["conf_matrix"])
    )
    return cap


def fine_parity(ref, ours, cap, data) -> dict:
    """The fine stage on forced coarse matches (every interior cell ↔ the same cell), both sides
    fed the reference's own fine maps and transformed coarse tokens: random weights give only a
    handful of real coarse matches, this compares hundreds."""
    ff0, ff1 = cap["fine"].split(1)
    t0, t1 = cap["tokens"]
    hw = tuple(cap["coarse"].shape[-2:])
    b, i, j = forced_cells(hw)
    d = {**data, "b_ids": b, "i_ids": i, "j_ids": j, "mconf": torch.ones(len(i))}
    d.update(mkpts0_c=coarse_points(i, hw[1]), mkpts1_c=coarse_points(j, hw[1]))
    with torch.inference_mode():
        w0, w1 = ref.fine_preprocess(ff0, ff1, t0, t1, d)
        w0, w1 = ref.loftr_fine(w0, w1)
        ref.fine_matching(w0, w1, d)
        _, k1, _ = ours.refine(ff0, ff1, t0, t1, b, i, j, hw, hw)
    diff = (d["mkpts1_f"] - k1).abs()
    return {
        "forced_matches": len(i),
        "forced_fine_max_abs_px": float(diff.max()),
        "forced_fine_mean_abs_px": float(diff.mean()),
        "forced_offset_px_max": float((d["mkpts1_f"] - d["mkpts1_c"]).abs().max()),
    }


def token_parity(ours, cap, x0, x1) -> dict:
    """Backbone maps and transformed coarse tokens, ours against the reference's (relative to
    the largest reference magnitude): a check that a saturated confidence matrix cannot hide."""
    with torch.inference_mode():
        fc, ff = ours.backbone(torch.cat([x0, x1]))
        t = [ours.pos_encoding(f[None]).flatten(2).transpose(1, 2) for f in fc]
        t0, t1 = ours.loftr_coarse(*t)

    def rel(a, b):
        return float((a - b).abs().max() / b.abs().max())

    return {
        "coarse_map_max_rel": rel(fc, cap["coarse"]),
        "fine_map_max_rel": rel(ff, cap["fine"]),
        "tokens_max_rel": max(rel(t0, cap["tokens"][0]), rel(t1, cap["tokens"][1])),
    }


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def vanilla(thr, long_side, ckpt_dir, names) -> dict:
    from kornia.feature.loftr.loftr import LoFTR as KLoFTR
    from kornia.feature.loftr.loftr import default_cfg

    from tiepoint.models.dense.loftr import LoFTR

    torch.manual_seed(0)
    cfg = {**default_cfg, "match_coarse": {**default_cfg["match_coarse"], "thr": thr}}
    ref = KLoFTR(pretrained=None, config=cfg)
    randomize_batchnorm(ref)
    ref.eval()
    path = ckpt_dir / "loftr_random.ckpt"
    torch.save({"state_dict": {f"matcher.{k}": v for k, v in ref.state_dict().items()}}, path)
    ours = LoFTR(preset="outdoor", weights=str(path), match_threshold=thr, resize=None).eval()
    x0, x1 = (x.to(DTYPE) for x in load_pair(long_side, rgb=False, names=names))
    ref.to(DTYPE), ours.to(DTYPE)
    cap = hook(ref)
    with torch.inference_mode():
        r, t_ref = timed(lambda: ref({"image0": x0, "image1": x1}))
    o, t_ours = timed(lambda: ours_run(ours, x0, x1))
    refd = {"conf_matrix": cap["conf_matrix"], "kpts0": r["keypoints0"]}
    refd.update(kpts1=r["keypoints1"], mconf=r["confidence"])
    row = {"case": f"LoFTR (kornia) thr {thr} {'/'.join(names)} {DTYPE}"}
    row.update(compare(refd, o))
    row.update(token_parity(ours, cap, x0, x1))
    row.update(fine_parity(ref, ours, cap, {"stride_c": 8, "stride_f": 2}))
    row.update(size=list(x0.shape[-2:]), s_ref=t_ref, s_ours=t_ours)
    row["state_keys"] = len(ref.state_dict())
    return row


def gim(thr, long_side, ckpt_dir, gim_root, names) -> dict:
    import kornia.utils

    grid = types.SimpleNamespace(create_meshgrid=kornia.utils.create_meshgrid)
    sys.modules.setdefault("kornia.utils.grid", grid)
    sys.path.insert(0, str(gim_root))
    from networks.loftr.loftr import LoFTR as GLoFTR

    from tiepoint.models.dense.loftr import LoFTR

    cfg = {  # networks/loftr/config.py defaults, lower-cased (as GIM's `lower_config`)
        "weight": None,
        "backbone_type": "ResNetFPN",
        "resolution": (8, 2),
        "fine_window_size": 5,
        "fine_concat_coarse_feat": False,
        "resnetfpn": {"initial_dim": 128, "block_dims": [64, 128, 196, 256, 512, 1024]},
        "coarse": {"d_model": 256, "nhead": 8, "layer_names": 4, "attention": "linear"},
        "match_coarse": {
            "thr": thr,
            "border_rm": 2,
            "match_type": "dual_softmax",
            "dsmax_temperature": 0.1,
            "skh_iters": 3,
            "skh_init_bin_score": 1.0,
            "skh_prefilter": False,
            "train_coarse_percent": 0.2,
            "train_pad_num_gt_min": 200,
            "sparse_spvs": False,
        },
        "fine": {"d_model": 128, "nhead": 8, "layer_names": 1, "attention": "linear"},
    }
    torch.manual_seed(0)
    ref = GLoFTR(cfg)
    randomize_batchnorm(ref)
    ref.eval()
    path = ckpt_dir / "gim_loftr_random.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in ref.state_dict().items()}}, path)
    ours = LoFTR(preset="gim", weights=str(path), match_threshold=thr, resize=None).eval()
    x0, x1 = (x.to(DTYPE) for x in load_pair(long_side, rgb=True, names=names))
    ref.to(DTYPE), ours.to(DTYPE)
    data = {"image0": x0, "image1": x1, "color0": x0, "color1": x1}
    cap = hook(ref)
    with torch.inference_mode():
        _, t_ref = timed(lambda: ref(data))
    o, t_ours = timed(lambda: ours_run(ours, x0, x1))
    refd = {"conf_matrix": data["conf_matrix"], "kpts0": data["mkpts0_f"]}
    refd.update(kpts1=data["mkpts1_f"], mconf=data["mconf"])
    row = {"case": f"GIM-LoFTR thr {thr} {'/'.join(names)} {DTYPE}"}
    row.update(compare(refd, o))
    keys = ("hw0_i", "hw1_i", "hw0_c", "hw1_c", "hw0_f", "hw1_f", "bs")
    row.update(token_parity(ours, cap, x0, x1))
    row.update(fine_parity(ref, ours, cap, {k: data[k] for k in keys}))
    row.update(size=list(x0.shape[-2:]), s_ref=t_ref, s_ours=t_ours)
    row["state_keys"] = len(ref.state_dict())
    return row


def markdown(rows: list[dict]) -> str:
    """The table of docs/loftr.md."""
    head = (
        "| case | matches ref/ours | same matches | conf max \\|Δ\\| (L×S) | maps rel Δ "
        "| tokens rel Δ | fine kpts max \\|Δ\\| px | forced fine max / mean \\|Δ\\| px (n) |\n"
        "|---|---|---|---|---|---|---|---|"
    ).replace("\\\\", "\\")
    out = [head]
    for r in rows:
        fine = f"{r['fine_kpts1_max_abs_px']:.1e}" if "fine_kpts1_max_abs_px" in r else "–"
        maps = max(r["coarse_map_max_rel"], r["fine_map_max_rel"])
        out.append(
            f"| {r['case']} | {r['matches_ref']}/{r['matches_ours']} | {r['same_coarse_matches']} "
            f"| {r['conf_max_abs']:.1e} | {maps:.1e} | {r['tokens_max_rel']:.1e} | {fine} "
            f"| {r['forced_fine_max_abs_px']:.1e} / {r['forced_fine_mean_abs_px']:.1e} "
            f"({r['forced_matches']}) |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gim-root", type=Path, help="folder holding GIM's networks/ (optional)")
    ap.add_argument("--long-side", type=int, default=320)
    ap.add_argument("--thr", type=float, nargs="+", default=[0.2, 0.0])
    ap.add_argument("--images", nargs=2, default=["img1.png", "img3.png"], help="of Oxford bikes")
    ap.add_argument("--no-vanilla", action="store_true")
    ap.add_argument("--float64", action="store_true", help="run both models in double")
    ap.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = ap.parse_args()
    global DTYPE
    DTYPE = torch.float64 if args.float64 else torch.float32
    torch.set_grad_enabled(False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for thr in [] if args.no_vanilla else args.thr:
            rows.append(vanilla(thr, args.long_side, Path(tmp), args.images))
            print(json.dumps(rows[-1]), flush=True)
        if args.gim_root:
            for thr in args.thr:
                rows.append(gim(thr, args.long_side, Path(tmp), args.gim_root, args.images))
                print(json.dumps(rows[-1]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    print(markdown(rows))


if __name__ == "__main__":
    main()
