"""GIM's balanced multi-dataset sampling (`GIM:train-*:datasets/sampler.py`, `BalanceSampler`).

Every epoch each dataset is resampled to exactly `maxlen` items: a smaller one keeps all its items
plus `maxlen − n` drawn uniformly with replacement; a larger one draws `maxlen` without
replacement, an item of a scene with n items weighted 1/n^0.75 (big scenes do not swamp small
ones). The per-dataset lists are shuffled and interleaved (GIM's `indices[i::n]` scheme: with equal
`maxlen`s, strict round robin), then sharded per rank. GIM reseeds with the epoch number; here the
generator is seeded by (seed, epoch), so a restart mid-epoch (`set_start`) replays the same order.

`Mixed` is a dataset built from several dataset configs that trains on their balanced mixture.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from ..errors import ConfigError
from .base import BaseDataset, collate


def scene_weights(scenes: Sequence) -> np.ndarray:
    """Per-item weight 1 / (n^0.75 + 1e-8), n = the number of items of the item's scene."""
    counts = Counter(scenes)
    return np.array([1.0 / (counts[s] ** 0.75 + 1e-8) for s in scenes], np.float64)


def resample(scenes: Sequence, maxlen: int, rng: np.random.Generator) -> np.ndarray:
    """`maxlen` item indices of one dataset (GIM's per-dataset rule), shuffled."""
    n = len(scenes)
    idx = np.arange(n)
    if n == 0:
        return idx
    if n < maxlen:
        idx = np.r_[rng.integers(0, n, maxlen - n), idx]
    elif n > maxlen > 0:
        w = scene_weights(scenes)
        idx = rng.choice(n, size=maxlen, replace=False, p=w / w.sum())
    return idx[rng.permutation(len(idx))]


def interleave(lists: list[np.ndarray], maxlens: list[int]) -> np.ndarray:
    """GIM's merge: n = sum(maxlen) // min(maxlen) groups; group i fills positions i, i+n, ..."""
    flat = np.concatenate(lists) if lists else np.zeros(0, np.int64)
    n = max(1, sum(maxlens) // max(1, min(maxlens)))
    if len(flat) % n:
        # uneven split (GIM would leave None holes): merge by fractional position instead
        pos = np.concatenate([(np.arange(len(x)) + 0.5) / max(len(x), 1) for x in lists])
        return flat[np.argsort(pos, kind="stable")]
    num = len(flat) // n
    out = np.empty_like(flat)
    for i in range(n):
        out[i::n] = flat[i * num : (i + 1) * num]
    return out


class BalancedSampler(Sampler):
    """Indices into `ConcatDataset(datasets)`: each dataset resampled to its `maxlen` per epoch."""

    def __init__(
        self,
        scenes: list[Sequence],
        maxlen: int | Sequence[int],
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.scenes = [list(s) for s in scenes]
        self.maxlen = [int(maxlen)] * len(scenes) if isinstance(maxlen, int) else list(maxlen)
        if len(self.maxlen) != len(self.scenes):
            raise ConfigError(f"maxlen: {len(self.maxlen)} values for {len(scenes)} datasets")
        if any(m % world_size for m in self.maxlen):
            raise ConfigError(f"maxlen {self.maxlen} must be divisible by world size {world_size}")
        self.offsets = np.cumsum([0] + [len(s) for s in self.scenes])[:-1]
        self.seed, self.rank, self.world_size = int(seed), rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def indices(self) -> np.ndarray:
        rng = np.random.default_rng([self.seed, self.epoch, 7])
        lists = []
        for off, sc, m in zip(self.offsets, self.scenes, self.maxlen):
            lists.append((resample(sc, m, rng) + off)[self.rank :: self.world_size])
        return interleave(lists, [m // self.world_size for m in self.maxlen])

    def __iter__(self):
        return iter(self.indices()[self.start :].tolist())

    def __len__(self) -> int:
        return max(0, sum(m // self.world_size for m in self.maxlen) - self.start)


def item_scenes(ds: Dataset) -> list:
    """The scene of each item of a dataset (`scenes`, or the first field of `items`), else one."""
    if hasattr(ds, "scenes") and len(ds.scenes) == len(ds):
        return list(ds.scenes)
    items = getattr(ds, "items", None)
    if items is not None and len(items) == len(ds) and all(isinstance(x, tuple) for x in items):
        return [x[0] for x in items]
    return ["all"] * len(ds)


class _Mixture(ConcatDataset):
    def set_epoch(self, epoch: int) -> None:
        for d in self.datasets:
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)


class Mixed(BaseDataset):
    """Several datasets trained on together (GIM: MegaDepth + ScanNet + WALK), each resampled to
    `maxlen` items per epoch. Items of a batch come from any of them, so they must share keys."""

    default_conf = {"datasets": {}, "maxlen": 1000, "val": None}  # val: which dataset validates

    def _init(self, conf) -> None:
        from . import get_dataset

        if not conf.datasets:
            raise ConfigError("data.datasets: give {name: dataset conf, ...} to mix")
        self.parts = {k: get_dataset(v) for k, v in conf.datasets.items()}

    def get_dataset(self, split: str) -> Dataset:
        if split == "train":
            return _Mixture([p.get_dataset("train") for p in self.parts.values()])
        key = self.conf.val or next(iter(self.parts))
        if key not in self.parts:
            raise ConfigError(f"data.val: '{key}' is not one of {list(self.parts)}")
        return self.parts[key].get_dataset(split)

    def get_data_loader(self, split, shuffle=None, rank=0, world_size=1, dataset=None,
                        batch_size=None) -> DataLoader:  # fmt: skip
        if split != "train":
            key = self.conf.val or next(iter(self.parts))
            return self.parts[key].get_data_loader(split, shuffle, rank, world_size, dataset,
                                                   batch_size)  # fmt: skip
        dataset = dataset if dataset is not None else self.get_dataset("train")
        maxlen = self.conf.maxlen
        maxlen = int(maxlen) if isinstance(maxlen, int) else [int(m) for m in maxlen]
        sampler = BalancedSampler(
            [item_scenes(d) for d in dataset.datasets], maxlen, self.conf.seed, rank, world_size
        )
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size("train"),
            sampler=sampler,
            num_workers=int(self.conf.num_workers),
            collate_fn=collate,
            drop_last=True,
        )
