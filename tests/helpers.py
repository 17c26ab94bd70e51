"""Helpers shared by several test files: one copy of each, so a fix applies everywhere.

Imported as `from helpers import ...` (tests/ is on sys.path through tests/conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from tiepoint.geometry.homography import scale_homography, warp_points

__all__ = [
    "extract_pair",
    "gt_warp",
    "in_ci",
    "match_leuven",
    "mutual_nn",
    "read_h",
    "repeatability",
    "require",
    "rotation",
    "save",
    "small_demo_run",
    "texture",
    "train_demo",
    "unavailable",
    "write_noise_image",
]


# ---------------------------------------------------------------------------- missing resources
def in_ci() -> bool:
    """CI sets CI=true; any value but empty/0/false/no counts."""
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def unavailable(message: str):
    """A shared file, weight or tool a test needs is missing: a failure in CI, a skip locally."""
    if in_ci():
        pytest.fail(f"{message} (CI is set: missing test resources fail instead of skipping)")
    pytest.skip(message)


def require(path: Path, what: str = "shared test data") -> Path:
    """`path` if it exists, else `unavailable`."""
    if not path.exists():
        unavailable(f"{what} not found at {path}")
    return path


# ---------------------------------------------------------------------------- homographies
def read_h(path: Path) -> np.ndarray:
    """A 3x3 ground-truth homography in the Oxford/HPatches text format."""
    return np.loadtxt(path).reshape(3, 3)


def rotation(rx=0.0, ry=0.0, rz=0.0) -> np.ndarray:
    """Rz @ Ry @ Rx for angles in degrees (right-handed, active rotations)."""
    rx, ry, rz = np.deg2rad([rx, ry, rz])
    Rx = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    Ry = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    Rz = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return Rz @ Ry @ Rx


# ---------------------------------------------------------------------------- features on a real pair
def extract_pair(model, folder: Path, resize: int | None = None, names=("img1.png", "img2.png")):
    """[(LoadedImage, features of batch item 0)] for two images of an Oxford sequence."""
    from tiepoint.images import load

    out = []
    for name in names:
        im = load(folder / name, resize=resize)
        with torch.no_grad():
            pred = model({"image": im.tensor})
        out.append((im, {k: v[0] for k, v in pred.items()}))
    return out


def gt_warp(points: np.ndarray, H: np.ndarray, scale0=(1.0, 1.0), scale1=(1.0, 1.0)) -> np.ndarray:
    """Points of (resized) image 0 → (resized) image 1 under the GT H between the originals."""
    return warp_points(scale_homography(H, scale0, scale1), points)


def repeatability(k0w: np.ndarray, k1: np.ndarray, size, th: float = 3.0) -> float:
    """Share of warped image-0 keypoints landing inside image 1 that have a keypoint within th px."""
    w, h = size
    inside = (k0w[:, 0] >= 0) & (k0w[:, 0] <= w - 1) & (k0w[:, 1] >= 0) & (k0w[:, 1] <= h - 1)
    d = np.linalg.norm(k0w[inside, None] - k1[None], axis=-1).min(1)
    return float((d < th).mean())


def mutual_nn(d0, d1) -> tuple[np.ndarray, np.ndarray]:
    """Indices (i0, i1) of mutual nearest neighbours by dot-product similarity."""
    d0, d1 = torch.as_tensor(d0), torch.as_tensor(d1)
    sim = d0 @ d1.T
    nn01, nn10 = sim.argmax(1), sim.argmax(0)
    i0 = torch.nonzero(nn10[nn01] == torch.arange(len(nn01))).flatten()
    return i0.numpy(), nn01[i0].numpy()


# ---------------------------------------------------------------------------- synthetic images
def texture(w=240, h=180, seed=0) -> np.ndarray:
    """A blob texture with plenty of SIFT corners (uint8 RGB)."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (h // 6, w // 6, 3)).astype(np.float32)
    img = cv2.resize(img, (w, h), interpolation=cv2.INTER_CUBIC)
    img = cv2.GaussianBlur(img, (0, 0), 1.0)
    return np.clip(img, 0, 255).astype(np.uint8)


def save(path: Path, img: np.ndarray) -> Path:
    """Write a uint8 image (format from the suffix), creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img).save(path)
    return path


def write_noise_image(path: Path, rng: np.random.Generator, size=(160, 120), sigma=2.0) -> Path:
    """Blurred uniform noise stretched to 0..255 (a texture every detector finds corners on)."""
    w, h = size
    img = cv2.GaussianBlur(rng.uniform(0, 255, (h, w, 3)).astype(np.float32), (0, 0), sigma)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), img.astype(np.uint8))
    return path


# a LightGlue small enough to train in seconds on SIFT descriptors (trainer and dataset tests)
TINY_LIGHTGLUE = {
    "name": "lightglue",
    "input_dim": 128,
    "descriptor_dim": 32,
    "n_layers": 2,
    "num_heads": 2,
    "depth_confidence": -1,
    "width_confidence": -1,
}

# a width/depth-reduced DKM (random init, ResNet-18 encoder, 64×96 input) as the DKM checkpoint,
# trainer and MegaDepth tests build it; configs/training/dkm_cpu_demo.yaml trains a larger one
TINY_DKM = {
    "name": "dkm",
    "preset": "outdoor",
    "pretrained": False,
    "resize": [64, 96],
    "upsample_res": None,
    "encoder": "resnet18",
    "proj_dim": 32,
    "gp_dim": 16,
    "dfn_dim": 32,
    "feat_dim": 16,
    "refiner_blocks": 1,
}


def small_demo_run(images: Path, steps: int) -> list[str]:
    """Overrides of the slow point-matcher demos: 40 cached training pairs of `images` in batches of
    4 (10 steps an epoch: the trainer validates at each end), 16 held-out pairs, 128 keypoints,
    `steps` optimizer steps whatever the machine's speed, validation every 20."""
    return [
        f"data.data_dir={images}",
        "data.train_size=40",
        "data.batch_size=4",
        "data.val_size=8",
        "data.val_pairs=16",
        "model.extractor.max_num_keypoints=128",
        "train.max_minutes=null",
        f"train.max_iterations={steps}",
        "train.eval_every_iter=20",
    ]


def train_demo(name: str, preset: str, overrides: list[str], output_dir: Path):
    """Train `preset` quietly with dotlist `overrides` → (experiment folder, validation history)."""
    import json

    from tiepoint.config import parse_dotlist
    from tiepoint.training import train

    exp = train(name, preset, parse_dotlist(overrides), output_dir=output_dir, progress=False)
    return exp, json.loads((exp / "val_history.json").read_text())


def match_leuven(data_dir: Path, pipeline, checkpoint: Path):
    """Oxford Leuven img1→img2 matched with `checkpoint` (it carries its architecture) → the
    MatchResult, the ground-truth H and the corner error of OpenCV's 3 px RANSAC homography."""
    import tiepoint
    from tiepoint.geometry.homography import homography_corner_error

    seq = data_dir / "homography" / "oxford_leuven"
    r = tiepoint.match(
        seq / "img1.png", seq / "img2.png", pipeline=pipeline, device="cpu", weights=str(checkpoint)
    )
    H_gt = read_h(seq / "H1to2p")
    H, _ = r.homography(estimator="opencv", threshold=3.0)
    return r, H_gt, homography_corner_error(H, H_gt, Image.open(seq / "img1.png").size)


def resume_and_compare(exp_dir: Path, conf, steps_done: int, total: int, uninterrupted: dict):
    """Resume the run in `exp_dir` (stopped after `steps_done` steps) up to `total` steps and check
    that every step after the restart has the loss of the uninterrupted run (`{step: loss}`).
    Returns the resumed Trainer."""
    from tiepoint.config import parse_dotlist
    from tiepoint.training import build_conf
    from tiepoint.training.trainer import Trainer

    resumed = Trainer(
        exp_dir,
        build_conf(conf, parse_dotlist([f"train.max_iterations={total}"])),
        restore=True,
        progress=False,
    )
    assert (resumed.epoch, resumed.iter, resumed.step) == (0, steps_done, steps_done)
    resumed.run()
    got = dict(resumed.loss_history)
    assert sorted(got) == list(range(steps_done + 1, total + 1))
    for s in got:
        assert got[s] == pytest.approx(uninterrupted[s], rel=1e-6, abs=1e-7), s
    return resumed


# model_config.yaml of a Descriptor Reasoning release (the reference trainer's keys): XFeat features,
# DINOv2 ViT-S/14, 2 attention layers
REASONING_CONFIG = {
    "dino": {"weights": "dinov2_vits14", "allow_resize": True},
    "extractor": {"model_name": "xfeat", "max_num_keypoints": 2048, "detection_threshold": 0.0},
    "reasoning": {
        "extractor_features_dim": 64,
        "semantic_features_dim": 384,
        "features_dim": 256,
        "n_attention_layers": 2,
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


def random_reasoning_state(seed: int, layers: int = 2) -> dict:
    """A Descriptor Reasoning head state (XFeat, ViT-S/14 sizes) of N(0, 1) weights from `seed`."""
    from tiepoint.models.matchers.reasoning_head import ReasoningHead

    g = torch.Generator().manual_seed(seed)
    shapes = ReasoningHead(64, 384, layers=layers).state_dict()
    return {k: torch.randn(v.shape, generator=g) for k, v in shapes.items()}


def random_reasoning_release(
    path: Path, config: dict | None = REASONING_CONFIG, seeds=(1, 2)
) -> dict:
    """A release zip (`reasoning_checkpoint.write_release`) with random heads, one checkpoint per
    seed (`checkpoint_<n>_<n·1000>.pt`, the last the newest), each also holding the `dino.`,
    `extractor.` and `semantic_reconstruction.` entries a release carries; config None: no
    model_config.yaml. Returns {member name: head state}."""
    from tiepoint.models.matchers.reasoning_checkpoint import write_release

    layers = (config or REASONING_CONFIG)["reasoning"]["n_attention_layers"]
    heads = {
        f"checkpoint_{n}_{n * 1000}.pt": random_reasoning_state(s, layers)
        for n, s in enumerate(seeds)
    }
    stray = {"dino.net.cls_token": torch.zeros(1), "extractor.w": torch.zeros(1)}
    stray["semantic_reconstruction.0.weight"] = torch.zeros(2)
    write_release(path, config, {k: {**v, **stray} for k, v in heads.items()})
    return {f"xfeat/{k}": v for k, v in heads.items()}
