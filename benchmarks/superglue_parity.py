"""Parity of tiepoint's SuperGlue with the official code (magicleap/SuperGluePretrainedNetwork,
models/superglue.py), without the official weights: the reference model gets a seeded random
initialisation (BatchNorm statistics and the dustbin score included), its state dict is saved in
the official file layout and loaded *strictly* into ours through our official loader, and both
models see the same keypoints, scores and descriptors.

Two halves in one file. The reference half runs in a separate environment that has only torch
and imports no tiepoint; the main half (tiepoint's environment) starts it, runs ours, compares.

    python3 -m venv /tmp/ref-sg && /tmp/ref-sg/bin/pip install torch==2.13.0 numpy
    git clone https://github.com/magicleap/SuperGluePretrainedNetwork /tmp/sg   # or a snapshot
    PYTHONPATH=src python benchmarks/superglue_parity.py --ref-python /tmp/ref-sg/bin/python \\
        --sg-src /tmp/sg [--out /tmp/superglue_parity]

Inputs: keypoints in a 640×480 image, image 1 = image 0's keypoints moved by a small homography
plus noise (a shuffled subset, plus outliers), descriptors = noisy copies, so the assignment has
structure. The reference takes (B,D,N) descriptors and the image tensor's shape; ours (B,N,D) and
`image_size` (W,H).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve()
CASES = [  # (M, N, sinkhorn iterations)
    (300, 400, 100),
    (1024, 1024, 50),
]
# 0.2: the official default (random weights give few such matches); 0: every mutual argmax
THRESHOLDS = (0.2, 0.0)


def make_inputs(torch, m: int, n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    w, h = 640, 480
    k0 = torch.rand(m, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    d0 = torch.nn.functional.normalize(torch.randn(m, 256, generator=g), dim=-1)
    common = min(m, n) * 2 // 3
    idx = torch.randperm(m, generator=g)[:common]
    k1 = torch.rand(n, 2, generator=g) * torch.tensor([w - 1.0, h - 1.0])
    d1 = torch.nn.functional.normalize(torch.randn(n, 256, generator=g), dim=-1)
    k1[:common] = k0[idx] * 0.9 + 20 + torch.randn(common, 2, generator=g)
    d1[:common] = torch.nn.functional.normalize(
        d0[idx] + 0.3 * torch.randn(common, 256, generator=g) / 16, dim=-1
    )
    perm = torch.randperm(n, generator=g)
    return {
        "keypoints0": k0[None],
        "keypoints1": k1[perm][None],
        "scores0": torch.rand(1, m, generator=g),
        "scores1": torch.rand(1, n, generator=g),
        "descriptors0": d0[None],
        "descriptors1": d1[perm][None],
        "size": (w, h),
    }


def reference_half(sg_src: Path, out: Path) -> None:
    """Runs in the reference environment: random official-layout weights + reference outputs."""
    import torch

    sys.path.insert(0, str(sg_src))
    from models import superglue as ref

    torch.manual_seed(0)
    real_load, real_lsd = torch.load, ref.SuperGlue.load_state_dict
    torch.load = lambda *a, **k: {}  # the official weights are not needed (nor present)
    ref.SuperGlue.load_state_dict = lambda self, sd, strict=True: None
    try:
        model = ref.SuperGlue({"weights": "outdoor"})
    finally:
        torch.load, ref.SuperGlue.load_state_dict = real_load, real_lsd
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for mod in model.modules():  # non-trivial BatchNorm and a non-default dustbin
            if isinstance(mod, torch.nn.BatchNorm1d):
                c = mod.num_features
                mod.weight.copy_(0.5 + torch.rand(c, generator=g))
                mod.bias.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_mean.copy_(0.1 * torch.randn(c, generator=g))
                mod.running_var.copy_(0.5 + torch.rand(c, generator=g))
        model.bin_score.fill_(0.37)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / "superglue_random_official_layout.pth")
    results = []
    for i, (m, n, iters) in enumerate(CASES):
        x = make_inputs(torch, m, n, seed=10 + i)
        model.config["sinkhorn_iterations"] = iters
        w, h = x["size"]
        data = {
            "keypoints0": x["keypoints0"],
            "keypoints1": x["keypoints1"],
            "scores0": x["scores0"],
            "scores1": x["scores1"],
            "descriptors0": x["descriptors0"].transpose(1, 2),
            "descriptors1": x["descriptors1"].transpose(1, 2),
            "image0": torch.empty(1, 1, h, w),
            "image1": torch.empty(1, 1, h, w),
        }
        # the reference returns only matches; rebuild its log-assignment by hooking the OT call
        captured = {}
        real_ot = ref.log_optimal_transport

        def hook(scores, alpha, iters, captured=captured, real_ot=real_ot):
            captured["la"] = real_ot(scores, alpha, iters)
            return captured["la"]

        ref.log_optimal_transport = hook
        by_threshold = {}
        for th in THRESHOLDS:
            model.config["match_threshold"] = th
            with torch.no_grad():
                by_threshold[th] = model(data)
        ref.log_optimal_transport = real_ot
        results.append(
            {"case": (m, n, iters), "inputs": x, "la": captured["la"], "pred": by_threshold}
        )
    torch.save(results, out / "reference_outputs.pt")
    print(json.dumps({"torch": torch.__version__, "cases": len(results)}))


def main_half(args) -> None:
    import torch

    from tiepoint.models.matchers.superglue import SuperGlue

    out = Path(args.out)
    proc = subprocess.run(
        [args.ref_python, str(HERE), "--reference", "--sg-src", args.sg_src, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        sys.exit(f"reference half failed:\n{proc.stderr[-3000:]}")
    ref_info = json.loads(proc.stdout.strip().splitlines()[-1])
    # our strict loader of the official layout (raises on any missing/unexpected/mis-shaped key)
    ours = SuperGlue(
        {"preset": "outdoor", "weights": str(out / "superglue_random_official_layout.pth")}
    ).eval()
    rows = []
    for r in torch.load(out / "reference_outputs.pt", weights_only=False):
        m, n, iters = r["case"]
        x = r["inputs"]
        size = torch.tensor([x["size"]], dtype=torch.float32)
        data = {
            "keypoints0": x["keypoints0"],
            "keypoints1": x["keypoints1"],
            "keypoint_scores0": x["scores0"],
            "keypoint_scores1": x["scores1"],
            "descriptors0": x["descriptors0"],
            "descriptors1": x["descriptors1"],
            "image_size0": size,
            "image_size1": size,
        }
        for th in THRESHOLDS:
            ours_it = SuperGlue(ours.conf, sinkhorn_iterations=iters, filter_threshold=th).eval()
            with torch.no_grad():
                pred = ours_it(data)
            ref_pred = r["pred"][th]
            la_ref, la = r["la"], pred["log_assignment"]
            m_ref, m_ours = ref_pred["matches0"].long(), pred["matches0"]
            both = (m_ref >= 0) & (m_ours >= 0)
            # the reference also reports scores of mutual matches below the threshold; compare
            # scores where both call it a match
            ds = (pred["matching_scores0"] - ref_pred["matching_scores0"]).abs()[both]
            rows.append(
                {
                    "M": m,
                    "N": n,
                    "sinkhorn_iterations": iters,
                    "filter_threshold": th,
                    "max_abs_log_assignment": float((la - la_ref).abs().max()),
                    "max_abs_assignment": float((la.exp() - la_ref.exp()).abs().max()),
                    "matches_ref": int((m_ref >= 0).sum()),
                    "matches_ours": int((m_ours >= 0).sum()),
                    "matches0_differ": int((m_ref != m_ours).sum()),
                    "max_abs_matching_scores": float(ds.max()) if ds.numel() else 0.0,
                }
            )
    report = {"reference_torch": ref_info["torch"], "ours_torch": torch.__version__, "cases": rows}
    print(json.dumps(report, indent=1))
    (out / "parity.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--reference", action="store_true", help="(internal) run the reference half")
    p.add_argument("--ref-python", default="/tmp/ref-sg/bin/python")
    p.add_argument("--sg-src", required=True, help="checkout of SuperGluePretrainedNetwork")
    p.add_argument("--out", default="/tmp/superglue_parity")
    a = p.parse_args()
    if a.reference:
        reference_half(Path(a.sg_src), Path(a.out))
    else:
        main_half(a)
