"""MegaDepth pairs for matcher fine-tuning: posed internet photos with MVS depth.

Standard (D2-Net) layout under `data_dir`:
    scene_info/<scene>.npz   image_paths, depth_paths, intrinsics, poses (world→camera 4×4),
                             overlap_matrix (N×N); entries are None for images not reconstructed
    <image path as stored>   e.g. Undistorted_SfM/<scene>/images/<name>.jpg
    <depth path as stored>   depth maps in h5 (dataset `depth`), or
                             `depth_subpath/<scene>/<stem>.h5`
The npz files hold object arrays, so they are read with pickling allowed: only point this dataset at
scene_info files you trust. Intrinsics are COLMAP's (pixel corners at integers) and are shifted by
−0.5 px to tiepoint's pixel-centre convention.

Each epoch draws `{split}_num_per_scene` pairs per scene, equally from `num_overlap_bins` bins of
the overlap range (min_overlap, max_overlap], with the generator seeded by (seed, epoch): a new
sample every epoch (the trainer calls `set_epoch`), identical across processes and restarts.

DKM's recipe (`configs/training/dkm_megadepth.yaml`; reference-methods §4.3) is also available:
`resize: [h, w]` resizes every image to exactly that size (aspect not kept, intrinsics scaled per
axis, depth by nearest neighbour where DKM interpolates it bilinearly, which would invent depths
across occlusion edges); `scene_weight_alpha` replaces the bins by DKM's sampler: each epoch draws
`{split}_num_per_scene` × #scenes pairs without replacement from all candidates in the overlap
range, a pair of a scene with n candidates weighted 1/n^alpha; `overlap_copies` adds DKM's extra
copies of each scene (the candidates above each listed overlap, weighted by their own count);
`shake_t` moves both training views by one random integer offset in [−shake_t, shake_t]² after
resizing (DKM's `rand_shake`), zeros coming in and the principal points moved with it.
Depth maps must be h5 files with a `depth` dataset of their image's size (one-line error if not).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, DatasetError
from .base import BaseDataset, item_rng
from .posed_images import load_view

logger = logging.getLogger("tiepoint")


class _MegaDepthPairs(Dataset):
    def __init__(self, owner: MegaDepth, split: str):
        self.owner, self.split = owner, split
        self.scenes = owner.scenes[split]
        self.items: list[tuple[str, int, int, float]] = []
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the pairs (validation keeps the epoch-0 sample)."""
        epoch = epoch if self.split == "train" else 0
        self.epoch = epoch
        c = self.owner.conf
        rng = np.random.default_rng([int(c.seed), int(epoch), 0 if self.split == "train" else 1])
        n = int(c.get(f"{self.split}_num_per_scene") or c.train_num_per_scene)
        if c.scene_weight_alpha is not None:
            self.items = self._weighted(rng, n * len(self.scenes))
            return
        edges = np.linspace(c.min_overlap, c.max_overlap, c.num_overlap_bins + 1)
        items = []
        for scene in self.scenes:
            info = self.owner.info(scene)
            ii, jj, ov = info["pairs"]
            if len(ov) == 0:
                continue
            per_bin = max(1, n // c.num_overlap_bins)
            for b in range(c.num_overlap_bins):
                sel = np.nonzero((ov > edges[b]) & (ov <= edges[b + 1]))[0]
                if len(sel) == 0:
                    continue
                pick = rng.choice(sel, size=min(per_bin, len(sel)), replace=False)
                items += [(scene, int(ii[k]), int(jj[k]), float(ov[k])) for k in pick]
        order = rng.permutation(len(items))
        self.items = [items[k] for k in order]

    def candidates(self) -> tuple[list[tuple[str, int, int, float]], np.ndarray]:
        """DKM's sampling population: every scene's candidate pairs (once, plus once more per
        `overlap_copies` entry for those above it), and each entry's weight 1/n^alpha, n the
        size of its scene copy."""
        c = self.owner.conf
        items, weights = [], []
        for scene in self.scenes:
            ii, jj, ov = self.owner.info(scene)["pairs"]
            for lo in [None, *(c.overlap_copies or [])]:
                sel = np.arange(len(ov)) if lo is None else np.nonzero(ov > lo)[0]
                if len(sel) == 0:
                    continue
                items += [(scene, int(ii[k]), int(jj[k]), float(ov[k])) for k in sel]
                weights.append(np.full(len(sel), len(sel) ** -float(c.scene_weight_alpha)))
        return items, (np.concatenate(weights) if weights else np.zeros(0))

    def _weighted(self, rng: np.random.Generator, num: int) -> list:
        items, w = self.candidates()
        if not items:
            return []
        pick = rng.choice(len(items), size=min(num, len(items)), replace=False, p=w / w.sum())
        return [items[k] for k in pick]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, idx: int) -> dict:
        c = self.owner.conf
        scene, i, j, overlap = self.items[idx]
        info = self.owner.info(scene)
        shift = None
        if c.shake_t and self.split == "train":  # one offset for both views, per item and epoch
            rng = item_rng(int(c.seed), self.epoch, idx)
            shift = tuple(int(t) for t in rng.integers(-c.shake_t, c.shake_t + 1, size=2))
        views = {}
        for v, k in enumerate((i, j)):
            view = load_view(
                self.owner.image_path(scene, info["image_paths"][k]),
                info["intrinsics"][k],
                self.owner.depth_path(scene, info["depth_paths"][k]) if c.read_depth else None,
                c.resize,
                c.square_pad,
                c.grayscale,
                depth_key="depth",
                shift=shift,
            )
            view["T_w2cam"] = torch.from_numpy(info["poses"][k]).float()
            views[f"view{v}"] = view
        T0 = views["view0"]["T_w2cam"].double()
        T1 = views["view1"]["T_w2cam"].double()
        T01 = (T1 @ torch.linalg.inv(T0)).float()
        return {
            "name": f"{scene}/{views['view0']['name']}|{views['view1']['name']}",
            "scene": scene,
            "idx": idx,
            "overlap": overlap,
            **views,
            "T_0to1": T01,
            "T_1to0": torch.linalg.inv(T01),
        }


class MegaDepth(BaseDataset):
    default_conf = {
        "data_dir": None,
        "info_dir": "scene_info",
        "image_subpath": "Undistorted_SfM",  # fallback: <image_subpath>/<scene>/images/<name>
        "depth_subpath": "depth_undistorted",  # fallback: <depth_subpath>/<scene>/<stem>.h5
        "train_scenes": None,  # list of names, or a text file (one per line); None = all not in val
        "val_scenes": [],
        "train_num_per_scene": 300,
        "val_num_per_scene": 10,
        "min_overlap": 0.1,
        "max_overlap": 0.7,
        "num_overlap_bins": 3,
        "resize": 1024,  # long side, or [h, w]: exactly that size (DKM; square_pad: false)
        "square_pad": True,
        "grayscale": False,
        "read_depth": True,
        "scene_weight_alpha": None,  # DKM's sampler instead of overlap bins: weight 1/n^alpha
        "overlap_copies": [],  # with it: extra copies of each scene's pairs above these overlaps
        "shake_t": 0,  # random translation of both training views, in resized pixels (DKM: 32)
    }

    def _init(self, conf) -> None:
        if conf.data_dir is None:
            raise ConfigError("data.data_dir: set it to the MegaDepth root folder")
        fixed = conf.resize is not None and not isinstance(conf.resize, int)
        if fixed and (len(conf.resize) != 2 or conf.square_pad):
            raise ConfigError(
                f"data.resize {list(conf.resize)}: a fixed size is [h, w] and leaves nothing "
                "to pad (set data.square_pad: false)"
            )
        if conf.overlap_copies and conf.scene_weight_alpha is None:
            raise ConfigError("data.overlap_copies needs data.scene_weight_alpha (DKM's sampler)")
        self.root = Path(conf.data_dir).expanduser()
        info_dir = self.root / conf.info_dir
        if not info_dir.is_dir():
            raise DatasetError(
                f"MegaDepth: {info_dir} does not exist (expected scene_info/<scene>.npz)"
            )
        available = sorted(p.stem for p in info_dir.glob("*.npz"))
        if not available:
            raise DatasetError(f"MegaDepth: no <scene>.npz in {info_dir}")
        val = self._scene_list(conf.val_scenes) or []
        train = self._scene_list(conf.train_scenes)
        train = [s for s in available if s not in val] if train is None else train
        unknown = [s for s in train + val if s not in available]
        if unknown:
            raise DatasetError(f"MegaDepth: scenes {unknown[:5]} have no npz in {info_dir}")
        self.scenes = {"train": train, "val": val}
        self._info: dict[str, dict] = {}

    def _scene_list(self, spec) -> list[str] | None:
        if spec is None:
            return None
        if isinstance(spec, str):
            p = Path(spec) if Path(spec).is_absolute() else self.root / spec
            if not p.exists():
                raise DatasetError(f"MegaDepth: scene list {p} does not exist")
            return [ln.strip() for ln in p.read_text().splitlines() if ln.strip()]
        return [str(s) for s in spec]

    def info(self, scene: str) -> dict:
        """Scene arrays plus the candidate pairs (i<j, both usable, overlap in range)."""
        if scene not in self._info:
            path = self.root / self.conf.info_dir / f"{scene}.npz"
            try:
                raw = np.load(path, allow_pickle=True)
                d = {
                    k: raw[k]
                    for k in ("image_paths", "depth_paths", "intrinsics", "poses", "overlap_matrix")
                }
            except (OSError, KeyError, ValueError) as e:
                raise DatasetError(
                    f"{path}: not a MegaDepth scene_info file ({str(e).splitlines()[0]})"
                ) from None
            usable = np.array(
                [
                    d["image_paths"][k] is not None
                    and d["poses"][k] is not None
                    and (d["depth_paths"][k] is not None or not self.conf.read_depth)
                    for k in range(len(d["image_paths"]))
                ]
            )
            ov = np.asarray(d["overlap_matrix"], np.float64)
            ii, jj = np.triu_indices(len(ov), k=1)
            keep = (
                usable[ii]
                & usable[jj]
                & (ov[ii, jj] > self.conf.min_overlap)
                & (ov[ii, jj] <= self.conf.max_overlap)
            )
            d["pairs"] = (ii[keep], jj[keep], ov[ii, jj][keep])
            K = []
            for k in range(len(d["intrinsics"])):
                Kk = d["intrinsics"][k]
                if Kk is not None:
                    Kk = np.array(Kk, np.float64).copy()
                    Kk[0, 2] -= 0.5  # COLMAP corner convention → pixel centres
                    Kk[1, 2] -= 0.5
                K.append(Kk)
            d["intrinsics"] = K
            d["poses"] = [None if p is None else np.asarray(p, np.float64) for p in d["poses"]]
            self._info[scene] = d
        return self._info[scene]

    def image_path(self, scene: str, stored: str) -> Path:
        p = self.root / stored
        return (
            p
            if p.exists()
            else self.root / self.conf.image_subpath / scene / "images" / Path(stored).name
        )

    def depth_path(self, scene: str, stored: str) -> Path:
        p = self.root / stored
        if p.exists():
            return p
        alt = self.root / self.conf.depth_subpath / scene / (Path(stored).stem + ".h5")
        if not alt.exists():
            raise DatasetError(f"MegaDepth: depth map {p} (or {alt}) does not exist")
        return alt

    def get_dataset(self, split: str) -> Dataset:
        if split not in self.scenes:
            raise ConfigError(f"megadepth has no split '{split}' (valid: train, val)")
        return _MegaDepthPairs(self, split)
