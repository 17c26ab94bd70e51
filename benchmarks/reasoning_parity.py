"""Parity of tiepoint's Descriptor Reasoning (`models/matchers/reasoning*.py`) with the reference
code (verlab/DescriptorReasoning_ACCV_2024), end to end, on random weights.

The reference half builds `ReasoningBase` with the released models' training config (5 layers,
1 head, semantic conditioning; xfeat 64-D + dinov2_vits14), randomly initialised, and saves its
config and state; tiepoint's half writes them as a release zip in the reference trainer's layout
(`reasoning_checkpoint.write_release`: `<folder>/model_config.yaml`,
`<folder>/checkpoint_<epoch>_<iter>.pt` = {"state_dict", "optimizer", ...}; a stray `dino.` key
is added to exercise the loader's filtering). The reference `Reasoning` wrapper then runs
unmodified on two real images, with `torch.hub.load` answered by a random DINOv2 hub model (see
dinov2_parity.py) and by a stand-in XFeat whose `detectAndCompute` returns fixed random keypoints
and descriptors, so the comparison covers the resize to 896, the ×14 flooring, the bicubic
sampling, both stacks and `match`. tiepoint's half loads the zip through its release loader and
the DINOv2 state strictly, refines the same keypoints/descriptors and matches.

    PYTHONPATH=src python benchmarks/reasoning_parity.py --ref-python /tmp/ref-reason/bin/python \\
        --dr-src /tmp/ref-src/DR --dinov2-src /tmp/ref-src/dinov2 [--out /tmp/reasoning_parity]
(environment as in dinov2_parity.py, plus omegaconf; the reference's torchvision/cv2/h5py/
easy_local_features imports are stubbed: the code that runs does not use them.)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve()
IMAGES = [Path(f"/work/shared/data/homography/oxford_bikes/img{i}.png") for i in (1, 2)]
N_KPTS = 1024


def load_image(path: Path):
    import numpy as np
    import torch
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB")).copy()
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


def fake_features(seed: int, h: int, w: int):
    import torch

    g = torch.Generator().manual_seed(seed)
    kpts = torch.rand(1, N_KPTS, 2, generator=g) * torch.tensor([w - 1, h - 1])
    desc = torch.nn.functional.normalize(torch.randn(1, N_KPTS, 64, generator=g), dim=-1)
    return kpts, desc


def reference(args) -> None:
    import torch
    from omegaconf import OmegaConf

    for name in ("torchvision", "cv2", "h5py", "easy_local_features", "easy_local_features.utils"):
        sys.modules[name] = types.ModuleType(name)
    sys.modules["easy_local_features.utils"].ops = types.SimpleNamespace()
    sys.path[:0] = [args.dr_src, args.dinov2_src]
    from dinov2.hub import backbones
    from reasoning.features import desc_reasoning as dr

    torch.manual_seed(0)
    dino = backbones.dinov2_vits14(pretrained=False).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in dino.named_parameters():
            if "norm" in name or ".ls" in name or name == "cls_token":
                p.add_(0.2 * torch.randn(p.shape, generator=g))
    out = Path(args.out)
    torch.save(dino.state_dict(), out / "dino_state.pt")

    images = [load_image(p) for p in IMAGES]
    feats = [fake_features(i, *im.shape[-2:]) for i, im in enumerate(images)]

    class FakeXFeat:
        def __init__(self):
            self.calls = 0

        def detectAndCompute(self, image, top_k=None):
            k, d = feats[self.calls % 2]
            self.calls += 1
            return [{"keypoints": k[0], "descriptors": d[0]}]

    torch.hub.load = lambda repo, name, **kw: dino if "dinov2" in repo else FakeXFeat()
    conf = {  # the trainer's config (train_multigpu_reasoning.load_train_objs), xfeat + vits14
        "dino": {"weights": "dinov2_vits14", "allow_resize": True},
        "extractor": {"model_name": "xfeat", "max_num_keypoints": 2048},
        "reasoning": {
            "extractor_features_dim": 64,
            "semantic_features_dim": 384,
            "features_dim": 256,
            "n_attention_layers": 5,
            "num_heads": 1,
            "attention": "full",
        },
        "semantic_interpolation_mode": "bicubic",
        "reasoning_triplet": False,
        "attention_progression": "alternating",
        "deep_supervision": True,
        "semantic_conditioning": True,
        "fix_dino_size": -1,
    }
    torch.manual_seed(2)
    base = dr.ReasoningBase(OmegaConf.create(conf)).eval()
    state = {**base.state_dict(), "dino.stray": torch.zeros(1)}
    config = OmegaConf.to_container(base.conf, resolve=True)
    torch.save({"config": config, "state_dict": state}, out / "ref_release.pt")
    model = dr.Reasoning(base, dev=None).eval()
    with torch.inference_mode():
        preds = [model({"image": im}) for im in images]
        pred = {f"{k}{i}": v for i, p in enumerate(preds) for k, v in p.items()}
        res = model.match({"image0": images[0], "image1": images[1]}, pred=pred)
    keep = [
        "reasoning_features",
        "semantic_features",
        "all_reasoning_features",
        "all_semantic_features",
        "dino_features",
    ]
    saved = {f"{k}{i}": p[k] for i, p in enumerate(preds) for k in keep}
    saved.update({"feats": feats, "mkpts0": res["matches0"][0], "mkpts1": res["matches1"][0]})
    torch.save(saved, out / "ref_out.pt")


def main(args) -> None:
    import time

    import torch

    from tiepoint.models.matchers.reasoning import Reasoning
    from tiepoint.models.matchers.reasoning_checkpoint import write_release
    from tiepoint.weights import load_torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cmd = [args.ref_python, str(HERE), "--reference", "--dr-src", args.dr_src]
    subprocess.run(cmd + ["--dinov2-src", args.dinov2_src, "--out", str(out)], check=True)
    rel = load_torch(out / "ref_release.pt")
    zip_path = write_release(
        out / "xfeat.zip", rel["config"], {"checkpoint_2_1024000.pt": rel["state_dict"]}
    )
    t = time.perf_counter()
    model = Reasoning({"weights": str(zip_path), "dino_weights": str(out / "dino_state.pt")}).eval()
    ref = load_torch(out / "ref_out.pt")
    images = [load_image(p) for p in IMAGES]
    rows, refined = {}, []
    with torch.no_grad():
        for i, (im, (k, d)) in enumerate(zip(images, ref["feats"])):
            o = model.refine(im, k, d)
            refined.append(o["descriptors"])
            for key in (
                "dino_features",
                "reasoning_features",
                "semantic_features",
                "all_reasoning_features",
                "all_semantic_features",
            ):
                r = ref[f"{key}{i}"]
                rows[f"{key}{i}"] = {
                    "max_abs": (o[key] - r).abs().max().item(),
                    "ref_scale": r.abs().max().item(),
                }
        pred = model(
            {
                "keypoints0": ref["feats"][0][0],
                "keypoints1": ref["feats"][1][0],
                "descriptors0": refined[0],
                "descriptors1": refined[1],
            }
        )
    m0 = pred["matches0"][0]
    valid = m0 > -1
    ours0 = ref["feats"][0][0][0][valid]
    ours1 = ref["feats"][1][0][0][m0[valid]]
    same = (
        ours0.shape == ref["mkpts0"].shape
        and torch.equal(ours0, ref["mkpts0"])
        and torch.equal(ours1, ref["mkpts1"])
    )
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "keypoints": N_KPTS,
                "image_size": list(images[0].shape[-2:]),
                "outputs": rows,
                "matches_ours": int(valid.sum()),
                "matches_ref": len(ref["mkpts0"]),
                "identical_matches": bool(same),
                "seconds_ours": round(time.perf_counter() - t, 1),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--reference", action="store_true", help="(internal) run the reference half")
    p.add_argument("--ref-python", default="/tmp/ref-reason/bin/python")
    p.add_argument("--dr-src", default="/tmp/ref-src/DR")
    p.add_argument("--dinov2-src", default="/tmp/ref-src/dinov2")
    p.add_argument("--out", default="/tmp/reasoning_parity")
    a = p.parse_args()
    reference(a) if a.reference else main(a)
