"""`video_labels`: training pairs from propagated video labels, augmented as GIM trains on them.

Input (GIM's layout, written by `tiepoint.video.propagate`):
    propagate_dir/<video>/{idx0}_{idx1}.npy   row 0 = [i0, i1, i0, i1], then (K, 4) labels
    frames_dir/<video>/{idx}.png              the frame cache (GIM's `image_1080p/<video>/`), or
    frames_dir/{idx}.png                      one video's cache folder
Labels are in frame-cache pixels after multiplying by `label_scale` (GIM: frame size / source
video size, i.e. 1 / vratio for labels in video pixels).

Per item (`GIM:train-gim-glue:datasets/walk/walk.py`, `datasets/utils.py:read_images`,
`datasets/augment.py`), with every draw from the item's own generator (seed, epoch, index):
- each image, with probability `dark_prob` (0.5): DarkAug (brightness/contrast, blur, motion blur,
  gamma, HSV value drop; the whole compose with p 0.75), ported to OpenCV;
- frames larger than `img_size` are fitted to its height or its width, chosen at random; with
  probability `rescale_prob` (0.5) the left image is rescaled ×U(0.6, 1.0) and the right
  ×U(1.0, 1.4) (capped so the right labels' box still fits); sizes floored to a multiple of `df`;
  a random crop that keeps the labels' top-left corner; zero padding bottom-right to `img_size`;
- with probability `homography_prob` (0.9) image 1 gets a random homography: corners jittered by
  up to ±`corner_shift` (25%) of w/h, then a rotation of U(±`max_rotation`°) about the centre;
- labels outside an image (GIM's test: x ≤ w − df), or in the warped-out region, are dropped;
  the draw is repeated up to `retries` (30) times until `min_labels` (64) labels survive. GIM then
  gives up on the pair; here the last try falls back to a draw without rescale or homography.
- the unique labels (sorted, as torch.unique), the first `keep_labels` (2048) of them, zero-padded
  to (`pad_labels`, 4) as `pseudo_labels`, with `num_labels`, `zs` True and `gt` False.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from .base import BaseDataset, item_rng

logger = logging.getLogger("tiepoint")


# ---- DarkAug (GIM:datasets/augment.py, albumentations) in OpenCV


def dark_aug(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """GIM's DarkAug on an (H, W, 3) uint8 RGB image."""
    if rng.random() >= 0.75:  # A.Compose(p=0.75)
        return img
    out = img.astype(np.float32)
    if rng.random() < 0.75:  # RandomBrightnessContrast(b (-0.6, 0), c (-0.5, 0.3)), by max
        alpha, beta = 1.0 + rng.uniform(-0.5, 0.3), rng.uniform(-0.6, 0.0) * 255.0
        out = np.clip(out * alpha + beta, 0, 255)
    if rng.random() < 0.1:  # Blur(3..9)
        k = int(rng.choice(np.arange(3, 10, 2)))
        out = cv2.blur(out, (k, k))
    if rng.random() < 0.2:  # MotionBlur(3..25): a random line through the kernel
        k = int(rng.choice(np.arange(3, 26, 2)))
        kernel = np.zeros((k, k), np.float32)
        x0, x1 = rng.integers(0, k, 2)
        y0, y1 = rng.integers(0, k, 2)
        cv2.line(kernel, (int(x0), int(y0)), (int(x1), int(y1)), 1.0, thickness=1)
        out = cv2.filter2D(out, -1, kernel / max(kernel.sum(), 1.0))
    if rng.random() < 0.1:  # RandomGamma(15..65): gamma = U / 100
        out = 255.0 * (out / 255.0) ** (rng.uniform(15, 65) / 100.0)
    if rng.random() < 0.1:  # HueSaturationValue(hue ±20, sat ±30, val -100..-40)
        hsv = cv2.cvtColor(np.clip(out, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV).astype(int)
        hsv[..., 0] = (hsv[..., 0] + int(rng.integers(-20, 21))) % 180
        hsv[..., 1] = np.clip(hsv[..., 1] + int(rng.integers(-30, 31)), 0, 255)
        hsv[..., 2] = np.clip(hsv[..., 2] + int(rng.integers(-100, -39)), 0, 255)
        out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2RGB).astype(np.float32)
    return np.clip(out, 0, 255).round().astype(np.uint8)


# ---- geometry (GIM:train-gim-glue:datasets/utils.py:read_images)


def _divisible(w, h, df):
    return max(w // df, 1) * df, max(h // df, 1) * df


def gim_read_image(img, rng, max_wh, df, rescale_prob, is_left, corner, rescale=True):
    """Resize / rescale / crop / pad one frame; returns (padded image, valid mask, scale, offset).

    A label x in the frame maps to x / scale − offset in the returned image. `corner` is the
    labels' box (x_min, y_min, x_max, y_max) in frame pixels.
    """
    W, H = _divisible(*max_wh, df)
    h, w = img.shape[:2]
    if h > H or w > W:  # fit to the height or the width, chosen at random
        s = rng.choice([H / h, W / w])
        w_new, h_new = int(round(w * s)), int(round(h * s))
    else:
        w_new, h_new = w, h
    if rescale and rng.random() < rescale_prob:
        ratio = max(h / H, w / W)
        if is_left:
            low, up = (0.6 / ratio, 1.0 / ratio) if ratio < 1.0 else (0.6, 1.0)
        else:
            low, up = (1.0 / ratio, 1.4 / ratio) if ratio < 1.0 else (1.0, 1.4)
            up = min(up, H / max(corner[3], 1e-6), W / max(corner[2], 1e-6))
        r = rng.uniform(low, max(low, up))
        w_new, h_new = _divisible(w_new * r, h_new * r, df)
    else:
        w_new, h_new = _divisible(w_new, h_new, df)
    w_new, h_new = int(w_new), int(h_new)
    height, width = min(h_new, H), min(w_new, W)
    h_start = w_start = 0
    if h_new > H:
        h_start = min(int(rng.random() * (h_new - H)), math.floor(corner[1] * (h_new / h)))
    if w_new > W:
        w_start = min(int(rng.random() * (w_new - W)), math.floor(corner[0] * (w_new / w)))
    out = cv2.resize(img, (w_new, h_new))[h_start : h_start + height, w_start : w_start + width]
    pad = np.zeros((H, W, img.shape[2]), img.dtype)
    pad[:height, :width] = out
    mask = np.zeros((H, W), bool)
    mask[:height, :width] = True
    return pad, mask, np.array([w / w_new, h / h_new]), np.array([w_start, h_start], float)


def random_homography(w: int, h: int, rng, corner_shift=0.25, max_rotation=180.0) -> np.ndarray:
    """GIM's image-1 homography: jittered corners, then a rotation about the centre."""
    src = np.array([[0, 0], [w - 1, 0], [w - 1, h - 1], [0, h - 1]], np.float32)
    xs = rng.choice(np.arange(-int(w * corner_shift), int(w * corner_shift)), 4, replace=False)
    ys = rng.choice(np.arange(-int(h * corner_shift), int(h * corner_shift)), 4, replace=False)
    (x_tl, x_bl, x_br, x_tr), (y_tl, y_bl, y_br, y_tr) = xs, ys
    dst = np.array(
        [[x_tl, y_tl], [w - x_tr, y_tr], [w - x_br, h - y_br], [x_bl, h - y_bl]], np.float32
    )
    M = cv2.getPerspectiveTransform(src, dst).astype(np.float64)
    a = np.radians(-rng.uniform(-max_rotation, max_rotation))
    c, s = np.cos(a), np.sin(a)
    cx, cy = (w - 1) / 2, (h - 1) / 2
    R = np.array([[c, -s, cx * (1 - c) + cy * s], [s, c, cy * (1 - c) - cx * s], [0, 0, 1]])
    return R @ M


def _apply_h(M, p):
    q = np.c_[p, np.ones(len(p))] @ M.T
    return q[:, :2] / q[:, 2:]


def _inside(p, size, df):
    """GIM's bounds test: 0 ≤ x and x / df ≤ w / df − 1 (i.e. x ≤ w − df)."""
    w, h = size
    return (p[:, 0] >= 0) & (p[:, 0] <= w - df) & (p[:, 1] >= 0) & (p[:, 1] <= h - df)


def _valid_in_warped_mask(mask1, p, df):
    """GIM's test: the warped mask at 1/df (nearest), sampled bilinearly at p/df, equals 1."""
    m = mask1[::df, ::df].astype(np.float32)
    q = p / df
    x0, y0 = np.floor(q[:, 0]).astype(int), np.floor(q[:, 1]).astype(int)
    fx, fy = q[:, 0] - x0, q[:, 1] - y0
    hh, ww = m.shape
    ok = np.ones(len(p), bool)
    for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)),
                        (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):  # fmt: skip
        xi, yi = x0 + dx, y0 + dy
        inb = (xi >= 0) & (xi < ww) & (yi >= 0) & (yi < hh)
        val = np.zeros(len(p), np.float32)
        val[inb] = m[yi[inb], xi[inb]]
        ok &= (wgt <= 1e-9) | (val == 1)
    return ok


def augment_pair(color0, color1, labels, rng, conf):
    """One GIM draw with retries; returns a dict of numpy arrays (images uint8 H×W×3)."""
    df = int(conf.df)
    box0 = np.r_[labels[:, :2].min(0), labels[:, :2].max(0)]
    box1 = np.r_[labels[:, 2:].min(0), labels[:, 2:].max(0)]
    tries = int(conf.retries)
    for attempt in range(tries + 1):
        last = attempt == tries  # fallback: no rescale, no homography
        ims, masks, geo = [], [], []
        for k, (img, box) in enumerate(((color0, box0), (color1, box1))):
            if rng.random() < conf.dark_prob:
                img = dark_aug(img, rng)
            pad, mask, scale, offset = gim_read_image(
                img, rng, conf.img_size, df, conf.rescale_prob, k == 0, box, rescale=not last
            )
            ims.append(pad)
            masks.append(mask)
            geo.append((scale, offset))
        left = labels[:, :2] / geo[0][0] - geo[0][1]
        right = labels[:, 2:] / geo[1][0] - geo[1][1]
        H, W = ims[1].shape[:2]
        M = np.eye(3)
        if not last and rng.random() < conf.homography_prob:
            M = random_homography(W, H, rng, conf.corner_shift, conf.max_rotation)
            right = _apply_h(M, right)
            ims[1] = cv2.warpPerspective(ims[1], M, (W, H), flags=cv2.INTER_LINEAR)
            masks[1] = cv2.warpPerspective(
                masks[1].astype(np.uint8), M, (W, H), flags=cv2.INTER_NEAREST
            ).astype(bool)
        keep = _inside(left, (W, H), df) & _inside(right, (W, H), df)
        left, right = left[keep], right[keep]
        if not np.allclose(M, np.eye(3)):
            ok = _valid_in_warped_mask(masks[1], right, df)
            left, right = left[ok], right[ok]
        out = np.unique(np.c_[left, right].astype(np.float32), axis=0)
        if len(out) >= conf.min_labels or last:
            return {
                "images": ims,
                "masks": masks,
                "labels": out,
                "scale": [g[0] for g in geo],
                "offset": [g[1] for g in geo],
                "H": M,
                "attempts": attempt + 1,
            }


def read_frame(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetError(f"{path}: frame image not found or unreadable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class _VideoPairs(Dataset):
    def __init__(self, owner: VideoLabels, split: str):
        self.owner, self.split = owner, split
        self.items = owner.items[split]
        self.scenes = [v for v, _ in self.items]  # for the balanced sampler's scene weights
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch if self.split == "train" else 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        c = self.owner.conf
        video, path = self.items[idx]
        raw = np.load(path)
        if raw.ndim != 2 or raw.shape[1] != 4 or len(raw) < 2:
            raise DatasetError(f"{path}: expected a (1+K, 4) propagated label array")
        i0, i1 = raw[0, :2].astype(np.int64).tolist()
        labels = raw[1:].astype(np.float64) * float(c.label_scale)
        frames = self.owner.frames / video
        if not frames.is_dir():  # one video's own cache folder (`tiepoint video frames`)
            frames = self.owner.frames
        color0 = read_frame(frames / f"{i0}.png")
        color1 = read_frame(frames / f"{i1}.png")
        rng = item_rng(c.seed, self.epoch, idx)
        a = augment_pair(color0, color1, labels, rng, c)
        lab = a["labels"][: int(c.keep_labels)]
        padded = np.zeros((int(c.pad_labels), 4), np.float32)
        padded[: len(lab)] = lab[: int(c.pad_labels)]

        def view(k):
            img = torch.from_numpy(a["images"][k]).permute(2, 0, 1).float() / 255.0
            if c.grayscale:
                img = (img * torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1)).sum(0, True)
            return {
                "image": img,
                "image_size": torch.tensor(a["images"][k].shape[1::-1], dtype=torch.float32),
                "mask": torch.from_numpy(a["masks"][k]),
                "scales": torch.from_numpy(1.0 / a["scale"][k]).float(),
                "offset": torch.from_numpy(a["offset"][k]).float(),
                "name": f"{(i0, i1)[k]}.png",
            }

        return {
            "name": f"{video}/{i0}_{i1}",
            "scene": video,
            "idx": idx,
            "view0": view(0),
            "view1": view(1),
            "pseudo_labels": torch.from_numpy(padded),
            "num_labels": min(len(lab), int(c.pad_labels)),
            "H_aug": torch.from_numpy(a["H"]).float(),  # image-1 homography of this draw
            "zs": True,
            "gt": False,
        }


class VideoLabels(BaseDataset):
    default_conf = {
        "propagate_dir": None,  # GIM's propagate/'{methods} {skips} ...'/ folder (<video>/ inside)
        "frames_dir": None,  # <video>/{idx}.png
        "train_videos": None,  # None: every video folder not in val_videos
        "val_videos": [],
        "label_scale": 1.0,  # labels x this = frame-cache pixels
        "img_size": [1024, 1024],  # (W, H) of the padded network input
        "df": 8,
        "grayscale": False,
        "dark_prob": 0.5,
        "rescale_prob": 0.5,
        "homography_prob": 0.9,
        "corner_shift": 0.25,
        "max_rotation": 180.0,
        "min_labels": 64,
        "retries": 30,
        "keep_labels": 2048,  # GIM-LightGlue keeps the first 2048 unique labels
        "pad_labels": 100000,  # GIM's FIX_MATCHES
    }

    def _init(self, conf) -> None:
        for key in ("propagate_dir", "frames_dir"):
            if conf[key] is None:
                raise ConfigError(f"data.{key}: set it (see docs/video.md)")
        self.root = Path(conf.propagate_dir).expanduser()
        self.frames = Path(conf.frames_dir).expanduser()
        if not self.root.is_dir():
            raise DatasetError(f"video_labels: {self.root} does not exist")
        videos = sorted(p.name for p in self.root.iterdir() if p.is_dir())
        val = [str(v) for v in conf.val_videos]
        train = [str(v) for v in conf.train_videos] if conf.train_videos is not None else None
        train = [v for v in videos if v not in val] if train is None else train
        unknown = [v for v in train + val if v not in videos]
        if unknown:
            raise DatasetError(f"video_labels: videos {unknown[:5]} not found in {self.root}")
        self.items = {}
        for split, vids in (("train", train), ("val", val)):
            items = []
            for v in vids:
                files = sorted(self.root.joinpath(v).glob("*_*.npy"), key=_pair_order)
                if not files:
                    logger.warning("video_labels: %s has no propagated pairs; skipped", v)
                items += [(v, f) for f in files]
            self.items[split] = items
        if not self.items["train"] and not self.items["val"]:
            raise DatasetError(f"video_labels: no propagated pairs (*_*.npy) under {self.root}")

    def get_dataset(self, split: str) -> Dataset:
        if split not in self.items:
            raise ConfigError(f"video_labels has no split '{split}' (valid: train, val)")
        return _VideoPairs(self, split)


def _pair_order(p: Path):
    try:
        return tuple(int(x) for x in p.stem.split("_"))
    except ValueError:
        raise DatasetError(f"{p}: not an '{{idx0}}_{{idx1}}.npy' propagated label file") from None
