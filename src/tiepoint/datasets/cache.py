"""Feature cache: run the frozen extractor over a dataset once, then train the matcher from h5.

With a frozen extractor, extraction dominates the cost of a training step (on a CPU by far), and
it gives the same answer every epoch for the same item. `export_features` stores, per item, the
padded features of both views plus everything ground truth needs (H_0to1, or T_0to1 + K + depth
sampled at the keypoints) in one h5 group `"<epoch>/<index>"`; `CachedPairs` serves them back.
Several epochs of a dataset that redraws its items (new homographies, new MegaDepth pairs) can be
cached with `num_epochs`; training epoch e then reads cached epoch e mod num_epochs.

The export writes `<path>.partial`, skips groups already there (an interrupted export resumes), and
renames it to `<path>` only when complete, so a finished cache is never half-written.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import partial_path, resumable_path
from ..errors import DatasetError
from ..geometry.depth import sample_depth
from .base import collate

logger = logging.getLogger("tiepoint")

FEATURE_KEYS = ("keypoints", "keypoint_scores", "descriptors", "scales", "oris", "mask")
PAIR_KEYS = ("H_0to1", "T_0to1", "T_1to0")


def _item_groups(f: h5py.File) -> set[str]:
    return {f"{e}/{i}" for e in f for i in f[e]}


@torch.no_grad()
def export_features(
    dataset: Dataset,
    pipeline,
    path: str | os.PathLike,
    num_epochs: int = 1,
    batch_size: int = 8,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = True,
    fingerprint: str = "",
) -> Path:
    """Cache the extractor's features of every item of `dataset` for `num_epochs` epochs.

    `fingerprint` (e.g. the data + extractor config as JSON) is stored with the cache; a cache made
    with another fingerprint is refused instead of silently reused.
    """
    path = Path(path)
    for p in (path, partial_path(path, ".partial")):
        if p.exists():
            with h5py.File(p, "r") as f:
                old = f.attrs.get("fingerprint", "")
            if old != fingerprint:
                raise DatasetError(
                    f"feature cache {p} was made with another data/extractor config; "
                    "delete it or set train.feature_cache.path elsewhere"
                )
    if path.exists():
        return path
    pipeline = pipeline.to(device).eval()
    with resumable_path(path, ".partial") as partial, h5py.File(partial, "a") as f:
        f.attrs["fingerprint"] = fingerprint
        done = _item_groups(f)
        for epoch in range(num_epochs):
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            todo = [i for i in range(len(dataset)) if f"{epoch}/{i}" not in done]
            if not todo:
                continue
            loader = DataLoader(
                torch.utils.data.Subset(dataset, todo),
                batch_size=batch_size,
                num_workers=num_workers,
                collate_fn=collate,
            )
            bar = tqdm(
                loader, desc=f"caching features (epoch {epoch})", disable=not progress, unit="batch"
            )
            for batch, idx in zip(bar, _chunks(todo, batch_size)):
                batch = _to(batch, device)
                feats = [pipeline.extract(batch[f"view{v}"]) for v in range(2)]
                for b, i in enumerate(idx):
                    g = f.create_group(f"{epoch}/{i}")
                    for v in range(2):
                        view = batch[f"view{v}"]
                        for k, t in feats[v].items():
                            arr = t[b].cpu().numpy()
                            g.create_dataset(
                                f"{k}{v}",
                                data=arr.astype(np.float16) if k == "descriptors" else arr,
                            )
                        g.create_dataset(f"image_size{v}", data=view["image_size"][b].cpu().numpy())
                        if "K" in view:
                            g.create_dataset(f"K{v}", data=view["K"][b].cpu().numpy())
                        if "depth" in view:
                            z, ok = sample_depth(
                                feats[v]["keypoints"][b : b + 1], view["depth"][b : b + 1].float()
                            )
                            g.create_dataset(
                                f"depth_keypoints{v}", data=torch.where(ok, z, 0)[0].cpu().numpy()
                            )
                    for k in PAIR_KEYS:
                        if k in batch:
                            g.create_dataset(k, data=batch[k][b].cpu().numpy())
                    g.attrs["name"] = str(batch["name"][b]) if "name" in batch else str(i)
                f.flush()
        f.attrs["num_epochs"] = num_epochs
        f.attrs["size"] = len(dataset)
    logger.info("feature cache written: %s", path)
    return path


def _chunks(seq: list, n: int):
    for k in range(0, len(seq), n):
        yield seq[k : k + n]


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    return batch


class CachedPairs(Dataset):
    """Items of a feature cache: flat `keypoints0`, `descriptors0`, ... plus `H_0to1`/`T_0to1`."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise DatasetError(f"feature cache {self.path} does not exist")
        with h5py.File(self.path, "r") as f:
            self.num_epochs = int(f.attrs.get("num_epochs", 1))
            self.size = int(f.attrs["size"])
        self.epoch = 0
        self._file = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> dict:
        if self._file is None:  # opened lazily: one handle per worker process
            self._file = h5py.File(self.path, "r")
        g = self._file[f"{self.epoch % self.num_epochs}/{idx}"]
        item = {}
        for k in g:
            arr = np.asarray(g[k])
            t = torch.from_numpy(arr)
            item[k] = t.float() if t.is_floating_point() else t
        item["name"] = str(g.attrs.get("name", idx))
        item["idx"] = idx
        return item

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state
