"""Parity of tiepoint's ADE20K scene parser with GIM's copy of CSAIL's code, on random weights.

The official checkpoints were unreachable, so the architecture is proven on random weights: the
reference model (GIM's `networks/mit_semseg`, built exactly as `video_preprocessor.py` builds
it) gets random conv weights and random BatchNorm statistics, its state dicts are saved in the
official two-file layout, and tiepoint loads those files strictly through its own loader. Both run
GIM's `segment` path (its own `read_segmentation_image` / `segment` functions, taken from
`video_preprocessor.py` by `ast` and executed unchanged) on a real image.

    # 1) reference, in a throwaway venv (torch, numpy, opencv; no torchvision needed):
    git --git-dir=<gim mirror> archive HEAD networks/mit_semseg video_preprocessor.py | tar -x -C SRC
    /tmp/ref-ade/bin/python benchmarks/ade20k_parity.py ref --gim SRC --image IMG --out DIR
    # 2) tiepoint, in the project venv; prints the comparison
    python benchmarks/ade20k_parity.py ours --image IMG --out DIR
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

EXCLUDE = ["person", "sky", "car"]
# ids of GIM's CLS_DICT for the excluded names (object150_info.csv Idx - 1)
EXCLUDE_IDS = [12, 2, 20]


def randomize(module: torch.nn.Module, gen: torch.Generator) -> None:
    """Random BN affine parameters and running statistics, so BN is not the identity."""
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=gen) * 0.5 + 0.75
            m.bias.data = torch.randn(n, generator=gen) * 0.1
            m.running_mean = torch.randn(n, generator=gen) * 0.1
            m.running_var = torch.rand(n, generator=gen) + 0.5
        elif isinstance(m, torch.nn.Conv2d) and m.bias is not None:
            m.bias.data = torch.randn(m.bias.shape, generator=gen) * 0.1


def gim_functions(src: Path) -> dict:
    """GIM's own `read_deeplab_image`, `read_segmentation_image` and `segment`, unchanged."""
    tree = ast.parse((src / "video_preprocessor.py").read_text())
    wanted = {"read_deeplab_image", "read_segmentation_image", "segment"}
    nodes = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in wanted]
    ns = {"cv2": cv2, "torch": torch, "np": np}
    exec(compile(ast.Module(nodes, []), "video_preprocessor.py", "exec"), ns)
    return ns


def run_ref(args) -> None:
    sys.path.insert(0, str(args.gim))
    from networks.mit_semseg.models import ModelBuilder, SegmentationModule, resnet
    from networks.mit_semseg.models.models import PPMDeepsup, ResnetDilated

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    enc = ResnetDilated(resnet.resnet50(pretrained=False), dilate_scale=8)
    dec = PPMDeepsup(num_class=150, fc_dim=2048, use_softmax=True)
    randomize(enc, gen)
    randomize(dec, gen)
    torch.save(enc.state_dict(), out / "encoder_epoch_20.pth")
    torch.save(dec.state_dict(), out / "decoder_epoch_20.pth")
    # GIM's construction, loading the files just written
    net_encoder = ModelBuilder.build_encoder(
        arch="resnet50dilated", fc_dim=2048, weights=str(out / "encoder_epoch_20.pth")
    )
    net_decoder = ModelBuilder.build_decoder(
        arch="ppm_deepsup",
        fc_dim=2048,
        num_class=150,
        weights=str(out / "decoder_epoch_20.pth"),
        use_softmax=True,
    )
    crit = torch.nn.NLLLoss(ignore_index=-1)
    seg = SegmentationModule(net_encoder, net_decoder, crit).eval()
    logits = {}
    seg.decoder.conv_last.register_forward_hook(lambda m, i, o: logits.setdefault("x", o))
    fn = gim_functions(Path(args.gim))
    rgb = cv2.imread(args.image)[..., ::-1].copy()
    t = time.time()
    with torch.no_grad():
        class_map = fn["segment"](rgb, torch.device("cpu"), seg)
        img = fn["read_segmentation_image"](rgb)
        probs = seg({"img_data": img[None]}, segSize=img.shape[1:])
    seconds = time.time() - t
    # GIM's mask: class map to frame size (nearest), then != each excluded class
    mask0 = class_map
    if mask0.shape[:2] != rgb.shape[:2]:
        mask0 = cv2.resize(mask0, rgb.shape[:2][::-1], interpolation=cv2.INTER_NEAREST)
    mask = mask0 != EXCLUDE_IDS[0]
    for cls in EXCLUDE_IDS[1:]:
        mask = mask & (mask0 != cls)
    np.savez_compressed(
        out / "ref.npz",
        logits=logits["x"][0].numpy(),
        probs=probs[0].numpy(),
        class_map=class_map,
        mask=mask,
        seconds=seconds,
        keys_encoder=len(enc.state_dict()),
        keys_decoder=len(dec.state_dict()),
    )
    print(f"reference done in {seconds:.1f} s; class map {class_map.shape}, mask {mask.shape}")


def run_ours(args) -> None:
    from tiepoint.models.segmentation import SceneParser, Segmenter
    from tiepoint.models.segmentation.ade20k import preprocess, to_rgb_uint8

    out = Path(args.out)
    ref = np.load(out / "ref.npz")
    model = SceneParser.from_checkpoints(out / "encoder_epoch_20.pth", out / "decoder_epoch_20.pth")
    seg = Segmenter(model, exclude=EXCLUDE)
    t = time.time()
    class_map = seg.class_map(args.image)
    seconds = time.time() - t
    mask = seg(args.image)
    with torch.no_grad():
        x = preprocess(to_rgb_uint8(args.image))
        logits = model.logits(x)[0].numpy()
        probs = model(x)[0].numpy()
    # random weights rarely predict person/sky/car: also compare the masks that exclude the N
    # (--top) classes the reference predicts most often (GIM's expressions on the reference class map)
    from tiepoint.models.segmentation import ADE20K_CLASSES, exclusion_mask

    counts = np.bincount(ref["class_map"].ravel(), minlength=150)
    topn = [int(i) for i in np.argsort(-counts)[: args.top]]
    frame_hw = mask.shape
    ref_cm = cv2.resize(ref["class_map"], frame_hw[::-1], interpolation=cv2.INTER_NEAREST)
    ref_topn = ref_cm != topn[0]
    for cls in topn[1:]:
        ref_topn = ref_topn & (ref_cm != cls)
    names = [ADE20K_CLASSES[i] for i in topn]
    ours_topn = exclusion_mask(class_map, names, frame_hw[::-1])
    rl, rp = ref["logits"], ref["probs"]
    top2 = np.sort(rp, 0)[-2:]
    res = {
        "image": args.image,
        "inference_hw": list(class_map.shape),
        "image_hw": list(mask.shape),
        "logits_max_abs_diff": float(np.abs(logits - rl).max()),
        "logits_ref_max_abs": float(np.abs(rl).max()),
        "logits_max_rel_diff": float(np.abs(logits - rl).max() / np.abs(rl).max()),
        "probs_max_abs_diff": float(np.abs(probs - rp).max()),
        "class_map_equal_frac": float((class_map == ref["class_map"]).mean()),
        "class_map_ties_below_1e-5": int(((top2[1] - top2[0]) < 1e-5).sum()),
        "mask_equal_frac": float((mask == ref["mask"]).mean()),
        "mask_true_frac": float(mask.mean()),
        "topN_classes": names,
        "topN_mask_equal_frac": float((ours_topn == ref_topn).mean()),
        "topN_mask_true_frac": float(ours_topn.mean()),
        "seconds_ref": float(ref["seconds"]),
        "seconds_ours": seconds,
    }
    print(json.dumps(res, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("side", choices=["ref", "ours"])
    p.add_argument("--gim", type=Path, help="folder with GIM's networks/ and video_preprocessor.py")
    p.add_argument("--image", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--top", type=int, default=1, help="exclude the N most predicted classes too")
    args = p.parse_args()
    (run_ref if args.side == "ref" else run_ours)(args)


if __name__ == "__main__":
    main()
