"""Image pairs with known intrinsics and relative pose (optionally depth): generic posed data.

Format — a manifest, one pair per line (the format of `../shared/data/pose/pairs.txt`):
    img0 img1 fx0 fy0 cx0 cy0 fx1 fy1 cx1 cy1 r00 r01 r02 r10 r11 r12 r20 r21 r22 t0 t1 t2
with paths relative to the manifest's folder, pinhole intrinsics of the stored images in the
pixel-centre convention, and T_0to1 = [R|t] mapping camera-0 to camera-1 coordinates.
Depth (optional): `depth_dir/<image stem>.h5` (dataset `depth`, metres, 0 = unknown) or `.npy`.
Pairs without depth still train: ground truth then falls back to the epipolar check.

The view helpers here (`load_view`) are shared with `megadepth`: resize the long side, optionally
pad to a square (bottom/right, so coordinates are unchanged), resize depth by nearest neighbour and
scale the intrinsics with the pixel-centre rule x' = (x + 0.5)·s − 0.5.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from ..images import read_image
from .base import BaseDataset

logger = logging.getLogger("tiepoint")


def read_depth(path: Path, key: str | None = None) -> np.ndarray:
    """A depth map (H×W float32, ≤0 or non-finite = unknown) from .h5 or .npy. `key`: the h5
    dataset that must hold it (None: 'depth', else the file's first dataset)."""
    try:
        if path.suffix == ".npy":
            depth = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            with h5py.File(path, "r") as f:
                if key is not None and key not in f:
                    raise DatasetError(
                        f"{path}: no dataset '{key}' in this depth file (it has {sorted(f.keys())})"
                    )
                name = key or ("depth" if "depth" in f else next(iter(f.keys())))
                depth = np.asarray(f[name], dtype=np.float32)
    except (OSError, KeyError, ValueError, StopIteration) as e:
        raise DatasetError(f"{path}: cannot read depth map ({str(e).splitlines()[0]})") from None
    if depth.ndim != 2:
        raise DatasetError(f"{path}: depth map has shape {depth.shape}, expected H×W")
    return depth


def _shift(a: np.ndarray, tx: int, ty: int) -> np.ndarray:
    """`a` (H, W[, C]) with its content moved by (tx, ty) pixels, zeros where nothing comes in."""
    out = np.zeros_like(a)
    h, w = a.shape[:2]
    ys, yd = (slice(0, h - ty), slice(ty, h)) if ty >= 0 else (slice(-ty, h), slice(0, h + ty))
    xs, xd = (slice(0, w - tx), slice(tx, w)) if tx >= 0 else (slice(-tx, w), slice(0, w + tx))
    out[yd, xd] = a[ys, xs]
    return out


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    S = np.array([[sx, 0, 0.5 * sx - 0.5], [0, sy, 0.5 * sy - 0.5], [0, 0, 1.0]])
    return S @ K


def load_view(
    image_path: Path,
    K: np.ndarray,
    depth_path: Path | None = None,
    resize: int | None = None,
    square_pad: bool = False,
    grayscale: bool = False,
    depth_key: str | None = None,
    shift: tuple[int, int] | None = None,
) -> dict:
    """One view ready for a network: image (C,h,w), image_size (w,h) of the real content, scales,
    K scaled to the resized image, and depth (h,w) (padding is unknown depth).

    `resize`: the long side, or [h, w] — exactly that size, the aspect not kept (DKM's training
    resize; x and y scale separately; no square padding). `depth_key`: the h5 dataset that must
    hold the depth (MegaDepth's 'depth'); when given, the map must also have the image's size (a
    resized or cropped map would silently misplace the ground truth). `shift`: move
    the content by (tx, ty) pixels after resizing (DKM's `shake_t`), zeros coming in (unknown
    depth), the principal point moved with it."""
    fixed = resize is not None and not isinstance(resize, (int, np.integer))
    if fixed and (square_pad or len(resize) != 2):
        raise ConfigError(
            f"resize {list(resize)}: a fixed size is [h, w], and leaves nothing to pad "
            "(square_pad must be false)"
        )
    img, (W, H) = read_image(image_path, max_size=max(resize) if fixed else resize)
    if grayscale and img.shape[2] == 3:
        img = (img @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    elif not grayscale and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    if fixed:
        nh, nw = (int(v) for v in resize)
    elif resize:
        s = resize / max(W, H)
        nw, nh = max(1, round(W * s)), max(1, round(H * s))
    else:
        nw, nh = W, H
    if img.shape[:2] != (nh, nw):
        interp = cv2.INTER_AREA if nw < img.shape[1] else cv2.INTER_LINEAR
        img = cv2.resize(img, (nw, nh), interpolation=interp)
        img = img[..., None] if img.ndim == 2 else img
    sx, sy = nw / W, nh / H
    view = {
        "image_size": torch.tensor([nw, nh], dtype=torch.float32),
        "scales": torch.tensor([sx, sy], dtype=torch.float32),
        "K": torch.from_numpy(scale_intrinsics(np.asarray(K, np.float64), sx, sy)).float(),
        "name": str(image_path.name),
    }
    depth = None
    if depth_path is not None:
        depth = read_depth(depth_path, depth_key)
        if depth_key is not None and depth.shape != (H, W):
            raise DatasetError(
                f"{depth_path}: depth map is {depth.shape[1]}×{depth.shape[0]}, "
                f"but its image {image_path} is {W}×{H}"
            )
        if depth.shape != (nh, nw):
            depth = cv2.resize(depth, (nw, nh), interpolation=cv2.INTER_NEAREST)
    if shift is not None and any(shift):
        tx, ty = (int(v) for v in shift)
        img = _shift(img, tx, ty)
        depth = None if depth is None else _shift(depth, tx, ty)
        K = view["K"].double()
        K[0, 2] += tx
        K[1, 2] += ty
        view["K"] = K.float()
    if square_pad:
        side = max(nw, nh) if not resize else max(resize, nw, nh)
        pad = np.zeros((side, side, img.shape[2]), np.float32)
        pad[:nh, :nw] = img
        img = pad
        if depth is not None:
            dpad = np.zeros((side, side), np.float32)
            dpad[:nh, :nw] = depth
            depth = dpad
    view["image"] = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1).float()
    if depth is not None:
        view["depth"] = torch.from_numpy(np.ascontiguousarray(depth)).float()
    return view


def parse_pairs_manifest(path: Path) -> list[dict]:
    if not path.exists():
        raise DatasetError(f"pairs manifest {path} does not exist")
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        f = line.split()
        if len(f) != 22:
            raise DatasetError(
                f"{path}:{n}: expected 22 fields (img0 img1 K0(4) K1(4) R(9) t(3)), got {len(f)}"
            )
        try:
            v = np.array(f[2:], np.float64)
        except ValueError:
            raise DatasetError(f"{path}:{n}: non-numeric calibration/pose values") from None
        K0 = np.array([[v[0], 0, v[2]], [0, v[1], v[3]], [0, 0, 1]])
        K1 = np.array([[v[4], 0, v[6]], [0, v[5], v[7]], [0, 0, 1]])
        T = np.eye(4)
        T[:3, :3] = v[8:17].reshape(3, 3)
        T[:3, 3] = v[17:20]
        pairs.append({"image0": f[0], "image1": f[1], "K0": K0, "K1": K1, "T_0to1": T})
    if not pairs:
        raise DatasetError(f"pairs manifest {path} lists no pairs")
    return pairs


class _PosedPairs(Dataset):
    def __init__(self, owner: PosedImages, pairs: list[dict]):
        self.owner, self.pairs = owner, pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def _depth_path(self, image: str) -> Path | None:
        if not self.owner.conf.depth_dir:
            return None
        stem = Path(image).stem
        for ext in (".h5", ".npy"):
            p = Path(self.owner.conf.depth_dir) / f"{stem}{ext}"
            if p.exists():
                return p
        return None

    def __getitem__(self, idx: int) -> dict:
        c, p = self.owner.conf, self.pairs[idx]
        views = {}
        for v in range(2):
            img = p[f"image{v}"]
            views[f"view{v}"] = load_view(
                self.owner.root / img,
                p[f"K{v}"],
                self._depth_path(img),
                c.resize,
                c.square_pad,
                c.grayscale,
            )
        if any("depth" in views[k] for k in views) and not all("depth" in views[k] for k in views):
            for k in views:  # both or neither, so batches stack
                views[k].pop("depth", None)
        T = torch.from_numpy(p["T_0to1"]).float()
        return {
            "name": f"{p['image0']}|{p['image1']}",
            "idx": idx,
            **views,
            "T_0to1": T,
            "T_1to0": torch.linalg.inv(T),
        }


class PosedImages(BaseDataset):
    default_conf = {
        "pairs": None,  # manifest path (see module docstring)
        "val_pairs": None,  # separate manifest for validation; else `val_fraction` of `pairs`
        "val_fraction": 0.1,
        "depth_dir": None,
        "resize": 1024,
        "square_pad": True,
        "grayscale": False,
        "shuffle_seed": 0,
    }

    def _init(self, conf) -> None:
        if not conf.pairs:
            raise ConfigError("data.pairs: set it to a pairs manifest")
        path = Path(conf.pairs).expanduser()
        self.root = path.parent
        pairs = parse_pairs_manifest(path)
        if conf.val_pairs:
            self.split_pairs = {
                "train": pairs,
                "val": parse_pairs_manifest(Path(conf.val_pairs).expanduser()),
            }
        else:
            order = np.random.default_rng(conf.shuffle_seed).permutation(len(pairs))
            n_val = int(round(conf.val_fraction * len(pairs)))
            self.split_pairs = {
                "val": [pairs[i] for i in order[:n_val]],
                "train": [pairs[i] for i in order[n_val:]],
            }
        missing = [
            p[k]
            for ps in self.split_pairs.values()
            for p in ps
            for k in ("image0", "image1")
            if not (self.root / p[k]).exists()
        ]
        if missing:
            raise DatasetError(
                f"{len(missing)} images of {path} are missing, e.g. {self.root / missing[0]}"
            )

    def get_dataset(self, split: str) -> Dataset:
        if split not in self.split_pairs:
            raise ConfigError(f"posed_images has no split '{split}' (valid: train, val)")
        return _PosedPairs(self, self.split_pairs[split])
