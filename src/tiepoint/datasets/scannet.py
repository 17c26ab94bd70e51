"""ScanNet pairs as Descriptor Reasoning trains on them (reference-methods.md §3.3).

Preparation (`prepare_scannet`, `tiepoint`-free of the reference code) reads a raw ScanNet-layout
folder — `scene*/color/<id>.jpg`, `depth/<id>.png` (uint16, mm), `pose/<id>.txt` (4×4
camera-to-world; the reference's export calls it `poses/`), `intrinsic/intrinsic_color.txt`
(or `intrinsics/`) — keeps every 15th frame (ids divisible by 15: the reference exports with
`frame_skip=15`), and computes the reference's covisibility for each frame pair i < j: a 32×32
grid over image i, lifted with its depth (nearest-resized to the colour image, colour intrinsics,
as the reference does; `intrinsic_depth.txt` is not read), moved with the poses, projected into j;
a grid point counts when its depth is known, it lands inside j and agrees with j's depth within
0.2 m. Pairs with covisibility in (0.4, 0.8) are kept. Images and depth are resized to short side
512 and cropped square (bottom/right, as the reference's `crop_square`), K scaled by new_h / h.

Each scene becomes one h5 (`<scene>.h5`: `images/<id>` uint8, `depth/<id>` float16 metres, `K`,
`pairs` (P,2) frame ids, `covis`, `T_0to1`, `T_1to0` (P,4,4)), written atomically; scenes whose h5
exists are skipped, so an interrupted preparation resumes. `ScanNet` trains on those files.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import h5py
import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset
from tqdm import tqdm

from ..atomic import atomic_path
from ..errors import DatasetError
from .base import BaseDataset

logger = logging.getLogger("tiepoint")

GRID = 32  # covisibility grid per side (reference)
DEPTH_TOL = 0.2  # m, depth agreement for covisibility (reference `warp_kpts`)


def _first(scene: Path, names: tuple[str, ...], what: str) -> Path:
    for n in names:
        if (scene / n).exists():
            return scene / n
    raise DatasetError(f"{scene}: no {what} ({' or '.join(names)})")


def read_scene(scene: Path, stride: int = 15) -> dict:
    """Frame ids (every `stride`-th, finite pose), colour K (3×3) and the file paths of a scene."""
    scene = Path(scene)
    color = _first(scene, ("color",), "color/ folder")
    pose_dir = _first(scene, ("pose", "poses"), "pose folder")
    kdir = _first(scene, ("intrinsic", "intrinsics"), "intrinsic folder")
    kfile = kdir / "intrinsic_color.txt"
    try:
        K = np.loadtxt(kfile)[:3, :3]
    except (OSError, ValueError) as e:
        raise DatasetError(f"{kfile}: cannot read intrinsics ({e})") from None
    ids, poses = [], {}
    for f in sorted(color.glob("*.jpg"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1):
        if not f.stem.isdigit() or int(f.stem) % stride:
            continue
        i = int(f.stem)
        pf = pose_dir / f"{i}.txt"
        if not pf.exists() or not (scene / "depth" / f"{i}.png").exists():
            raise DatasetError(f"{scene}: frame {i} has no pose or depth file")
        P = np.loadtxt(pf).reshape(4, 4)
        if not np.isfinite(P).all():  # ScanNet marks lost tracking with -inf poses
            continue
        ids.append(i)
        poses[i] = P
    return {"ids": ids, "poses": poses, "K": K, "root": scene}


def load_frame(scene: dict, i: int) -> tuple[np.ndarray, np.ndarray]:
    """RGB uint8 (H,W,3) and depth in metres at the colour resolution (nearest)."""
    root = scene["root"]
    img = cv2.imread(str(root / "color" / f"{i}.jpg"), cv2.IMREAD_COLOR)
    dep = cv2.imread(str(root / "depth" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
    if img is None or dep is None or dep.dtype != np.uint16:
        raise DatasetError(f"{root}: frame {i}: unreadable colour or depth (depth: uint16 PNG, mm)")
    h, w = img.shape[:2]
    dep = cv2.resize(dep, (w, h), interpolation=cv2.INTER_NEAREST).astype(np.float32) / 1000
    return img[..., ::-1].copy(), dep


def relative_pose(P0: np.ndarray, P1: np.ndarray) -> np.ndarray:
    """T_0to1 (4×4) from camera-to-world poses."""
    return np.linalg.inv(P1) @ P0


def covisibility(d0: np.ndarray, d1: np.ndarray, T: np.ndarray, K: np.ndarray) -> float:
    """The reference's covisibility of frame 0 in frame 1 (fraction of a 32×32 grid)."""
    h, w = d0.shape
    u, v = np.meshgrid(np.linspace(0, 1, GRID), np.linspace(0, 1, GRID), indexing="ij")
    kp = np.stack([u.ravel() * (w - 1), v.ravel() * (h - 1)], -1)
    d0, d1 = d0.copy(), d1.copy()
    d0[0, :] = d0[:, 0] = d1[0, :] = d1[:, 0] = 0  # as the reference
    ij = np.clip(np.round(kp - 0.5).astype(int), 0, None)
    z = d0[np.minimum(ij[:, 1], h - 1), np.minimum(ij[:, 0], w - 1)]
    X = np.linalg.inv(K) @ (np.c_[kp, np.ones(len(kp))] * z[:, None]).T
    X1 = T[:3, :3] @ X + T[:3, 3:]
    p = (K @ X1).T
    w1 = p[:, :2] / (p[:, 2:] + 1e-5)
    r = np.round(w1).astype(int)
    inb = (r[:, 0] >= 0) & (r[:, 0] < w) & (r[:, 1] >= 0) & (r[:, 1] < h)
    z1 = np.zeros(len(kp))
    z1[inb] = d1[r[inb, 1], r[inb, 0]]
    inside = (w1[:, 0] > 0) & (w1[:, 0] < w) & (w1[:, 1] > 0) & (w1[:, 1] < h)
    ok = (z > 0) & (np.abs(X1[2] - z1) < DEPTH_TOL) & inside
    return float(ok.sum()) / len(kp)


def resize_crop(img: np.ndarray, short: int, interp: int) -> tuple[np.ndarray, float]:
    """Short side → `short` (size as the reference's `resize_short_edge`), then crop square."""
    h, w = img.shape[:2]
    nh, nw = (short, int(w * short / h)) if h <= w else (int(h * short / w), short)
    out = cv2.resize(img, (nw, nh), interpolation=interp)
    s = min(nh, nw)
    return out[:s, :s], nh / h


def prepare_scene(
    scene_dir: Path, out: Path, stride=15, covis_range=(0.4, 0.8), short_side=512, progress=True
) -> int:
    """One scene → its h5 (atomic); returns the number of pairs kept."""
    scene = read_scene(scene_dir, stride)
    ids = scene["ids"]
    frames = {i: load_frame(scene, i) for i in ids}
    pairs, cov = [], []
    todo = [(a, b) for k, a in enumerate(ids) for b in ids[k + 1 :]]
    for a, b in tqdm(todo, desc=f"covisibility {scene_dir.name}", disable=not progress):
        T = relative_pose(scene["poses"][a], scene["poses"][b])
        c = covisibility(frames[a][1], frames[b][1], T, scene["K"])
        if covis_range[0] < c < covis_range[1]:
            pairs.append((a, b))
            cov.append(c)
    with atomic_path(out, suffix=".tmp.h5") as tmp, h5py.File(tmp, "w") as f:
        used = sorted({i for p in pairs for i in p})
        scale = 1.0
        for i in used:
            img, scale = resize_crop(frames[i][0], short_side, cv2.INTER_AREA)
            dep, _ = resize_crop(frames[i][1], short_side, cv2.INTER_NEAREST)
            f.create_dataset(f"images/{i}", data=img, compression="gzip")
            f.create_dataset(f"depth/{i}", data=dep.astype(np.float16), compression="gzip")
        K = scene["K"].copy()
        K[:2] *= scale
        f["K"] = K
        f["pairs"] = np.array(pairs, dtype=np.int64).reshape(-1, 2)
        f["covis"] = np.array(cov, dtype=np.float64)
        T = [relative_pose(scene["poses"][a], scene["poses"][b]) for a, b in pairs]
        f["T_0to1"] = np.array(T).reshape(-1, 4, 4)
        f["T_1to0"] = np.linalg.inv(f["T_0to1"][()]) if pairs else np.zeros((0, 4, 4))
        f.attrs.update(stride=stride, covis_min=covis_range[0], covis_max=covis_range[1])
    return len(pairs)


def prepare_scannet(raw: Path, out_dir: Path, progress=True, **kw) -> dict[str, int]:
    """Every `scene*` folder of `raw` → `out_dir/<scene>.h5`; existing ones are kept (resume)."""
    raw, out_dir = Path(raw), Path(out_dir)
    scenes = sorted(p for p in raw.glob("scene*") if p.is_dir())
    if not scenes:
        raise DatasetError(f"{raw}: no scene* folders (expected a raw ScanNet layout)")
    done = {}
    for s in scenes:
        out = out_dir / f"{s.name}.h5"
        if out.exists():
            continue
        done[s.name] = prepare_scene(s, out, progress=progress, **kw)
        logger.info("scannet: %s: %d pairs", s.name, done[s.name])
    return done


class _ScenePairs(Dataset):
    def __init__(self, path: Path):
        self.path = path
        with h5py.File(path, "r") as f:
            self.pairs = f["pairs"][()]
        self._f = None

    def __len__(self) -> int:
        return len(self.pairs)

    def _view(self, f, i: int, K: torch.Tensor) -> dict:
        img = torch.from_numpy(f[f"images/{i}"][()]).permute(2, 0, 1).float() / 255
        dep = torch.from_numpy(f[f"depth/{i}"][()].astype(np.float32))
        size = torch.tensor([img.shape[-1], img.shape[-2]], dtype=torch.float32)
        return {"image": img, "depth": dep, "K": K, "image_size": size}

    def __getitem__(self, k: int) -> dict:
        if self._f is None:
            self._f = h5py.File(self.path, "r")
        f = self._f
        a, b = (int(x) for x in self.pairs[k])
        K = torch.from_numpy(f["K"][()]).float()
        return {
            "name": f"{self.path.stem}/{a}|{b}",
            "view0": self._view(f, a, K),
            "view1": self._view(f, b, K),
            "T_0to1": torch.from_numpy(f["T_0to1"][k]).float(),
            "T_1to0": torch.from_numpy(f["T_1to0"][k]).float(),
        }

    def __getstate__(self):
        return {**self.__dict__, "_f": None}


class ScanNet(BaseDataset):
    """Pairs from the per-scene h5 files of `prepare_scannet` (scene lists: one name a line)."""

    default_conf = {"data_dir": None, "train_scenes": None, "val_scenes": None, "val_fraction": 0.1}

    def _init(self, conf):
        if not conf.data_dir:
            raise DatasetError("data.data_dir (the folder of prepared <scene>.h5 files) is missing")
        self.root = Path(conf.data_dir)
        files = sorted(self.root.glob("*.h5"))
        if not files:
            raise DatasetError(f"{self.root}: no prepared scene h5 files (run prepare_scannet)")
        self.files = files

    def _scenes(self, split: str) -> list[Path]:
        lst = self.conf.get(f"{split}_scenes")
        if lst:
            names = Path(lst).read_text().split()
            return [self.root / f"{n}.h5" for n in names if (self.root / f"{n}.h5").exists()]
        n_val = max(1, int(round(len(self.files) * self.conf.val_fraction)))
        if len(self.files) == 1:
            return self.files
        return self.files[-n_val:] if split == "val" else self.files[:-n_val]

    def get_dataset(self, split: str) -> Dataset:
        return ConcatDataset([_ScenePairs(p) for p in self._scenes(split)])


def main(argv=None) -> None:
    """`python -m tiepoint.datasets.scannet RAW OUT`: prepare every scene (resumable)."""
    import argparse

    from ..errors import TiepointError

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("raw", type=Path, help="folder of scene*/ in the raw ScanNet layout")
    ap.add_argument("out", type=Path, help="folder for <scene>.h5")
    ap.add_argument("--stride", type=int, default=15)
    ap.add_argument("--short-side", type=int, default=512)
    a = ap.parse_args(argv)
    try:
        prepare_scannet(a.raw, a.out, stride=a.stride, short_side=a.short_side)
    except TiepointError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    main()
