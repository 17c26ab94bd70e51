"""BaseDataset: one config-driven contract for every training/validation dataset.

A dataset class has a `default_conf` (merged over the base defaults; unknown keys are errors naming
the closest valid key), implements `_init(conf)` and `get_dataset(split) -> torch Dataset`, and gets
data loaders with batching, collation of nested dicts, worker seeding, per-epoch reshuffling,
distributed sharding and mid-epoch resumption for free.

Per-item randomness must not depend on the worker or on the order items are loaded in, so that
resuming a run and multi-process training see the same samples: datasets derive each item's
generator from (seed, epoch, index) — see `item_rng`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..config import class_default_conf, merge_strict

logger = logging.getLogger("tiepoint")


def item_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The generator for one item: independent of workers, processes and loading order."""
    return np.random.default_rng([int(seed), int(epoch), int(index)])


class ResumableSampler(DistributedSampler):
    """DistributedSampler (also used with one process) that can start mid-epoch.

    Index order depends only on (seed, epoch), so skipping the first `start` indices after a
    restart reproduces exactly the batches an uninterrupted run would have drawn next.
    """

    def __init__(
        self,
        dataset,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ):
        super().__init__(
            dataset,
            num_replicas=world_size,
            rank=rank,
            shuffle=shuffle,
            seed=seed,
            drop_last=drop_last,
        )
        self.start = 0

    def set_start(self, start: int) -> None:
        self.start = int(start)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        return iter(indices[self.start :])

    def __len__(self) -> int:
        return max(0, super().__len__() - self.start)


def collate(batch: list) -> Any:
    """Stack a list of samples: tensors/arrays/numbers are stacked, strings kept as lists, dicts and
    sequences collated recursively; tensors of different shapes stay a list."""
    first = batch[0]
    if isinstance(first, torch.Tensor):
        if all(b.shape == first.shape for b in batch):
            return torch.stack(batch, 0)
        return list(batch)
    if isinstance(first, np.ndarray):
        if first.dtype.kind in "OUS":
            return list(batch)
        return collate([torch.from_numpy(np.asarray(b)) for b in batch])
    if isinstance(first, bool):
        return torch.tensor(batch, dtype=torch.bool)
    if isinstance(first, (int, np.integer)):
        return torch.tensor(batch, dtype=torch.long)
    if isinstance(first, (float, np.floating)):
        return torch.tensor(batch, dtype=torch.float32)
    if isinstance(first, str) or first is None:
        return list(batch)
    if isinstance(first, dict):
        return {k: collate([b[k] for b in batch]) for k in first}
    if isinstance(first, (list, tuple)):
        if all(len(b) == len(first) for b in batch):
            return (
                type(first)(collate(list(s)) for s in zip(*batch))
                if isinstance(first, tuple)
                else [collate(list(s)) for s in zip(*batch)]
            )
        return list(batch)
    return list(batch)


def _worker_init(num_threads: int):
    def init(worker_id: int) -> None:
        info = torch.utils.data.get_worker_info()
        seed = info.seed % 2**32
        random.seed(seed)
        np.random.seed(seed)
        torch.set_num_threads(num_threads)

    return init


class BaseDataset:
    base_default_conf: ClassVar[dict] = {
        "name": None,
        "batch_size": 1,
        "train_batch_size": None,  # default: batch_size
        "val_batch_size": None,
        "test_batch_size": None,
        "num_workers": 0,
        "num_threads": 1,  # torch threads per worker
        "prefetch_factor": 2,
        "shuffle_training": True,
        "seed": 0,
    }
    default_conf: ClassVar[dict] = {}
    splits: ClassVar[tuple[str, ...]] = ("train", "val")

    @classmethod
    def full_default_conf(cls) -> DictConfig:
        return class_default_conf(cls)

    def __init__(self, conf: dict | DictConfig | None = None, **overrides: Any):
        self.conf = merge_strict(
            self.full_default_conf(), conf, overrides or None, where=f"data ({type(self).__name__})"
        )
        OmegaConf.set_readonly(self.conf, True)
        self._init(self.conf)

    def _init(self, conf: DictConfig) -> None:
        pass

    def get_dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def batch_size(self, split: str) -> int:
        return int(self.conf.get(f"{split}_batch_size") or self.conf.batch_size)

    def get_data_loader(
        self,
        split: str,
        shuffle: bool | None = None,
        rank: int = 0,
        world_size: int = 1,
        dataset: Dataset | None = None,
        batch_size: int | None = None,
    ) -> DataLoader:
        """A loader whose `.sampler` is a `ResumableSampler` (call `set_epoch` / `set_start`).

        With world_size > 1 each rank gets a disjoint shard; the global batch is split across ranks
        by the caller (pass the per-rank `batch_size`).
        """
        dataset = dataset if dataset is not None else self.get_dataset(split)
        train = split == "train"
        if shuffle is None:
            shuffle = train and self.conf.shuffle_training
        sampler = ResumableSampler(
            dataset, shuffle, self.conf.seed, rank, world_size, drop_last=train
        )
        nw = int(self.conf.num_workers)
        return DataLoader(
            dataset,
            batch_size=batch_size or self.batch_size(split),
            sampler=sampler,
            num_workers=nw,
            collate_fn=collate,
            drop_last=train,
            worker_init_fn=_worker_init(int(self.conf.num_threads)) if nw else None,
            prefetch_factor=int(self.conf.prefetch_factor) if nw else None,
            persistent_workers=False,  # so set_epoch() on the dataset reaches fresh workers
            # own generator: creating a loader must not consume the global RNG (exact resumption)
            generator=torch.Generator().manual_seed(int(self.conf.seed)),
        )
