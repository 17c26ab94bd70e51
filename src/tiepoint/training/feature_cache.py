"""Training on cached features: with a frozen extractor, its keypoints and descriptors of every
training item (for `num_epochs` epochs of augmentation) and validation item are exported once to
h5 files (see `datasets.cache`) and the loaders read those instead of images."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from ..config import to_container
from . import distributed as dist_lib

# data settings that change how items are batched or loaded, not which items there are
_LOADER_KEYS = {
    "batch_size",
    "train_batch_size",
    "val_batch_size",
    "test_batch_size",
    "num_workers",
    "num_threads",
    "prefetch_factor",
    "shuffle_training",
}


def cached_sets(
    conf: DictConfig, model, train_set, val_set, exp_dir: Path, device, main: bool, progress: bool
):
    """(train, val) datasets read from the cache, exported first by rank 0 when missing or stale.

    A relative `train.feature_cache.path` is relative to the training root, so experiments can
    share one cache; its fingerprint (data, split, epochs, extractor) tells when it is stale.
    """
    from ..datasets.cache import CachedPairs, export_features

    fc = conf.train.feature_cache
    root = (exp_dir.parent / fc.path) if fc.path else exp_dir / "feature_cache"
    paths = {"train": root / "train.h5", "val": root / "val.h5"}
    if main:

        def fingerprint(data_conf, split):
            data = {k: v for k, v in to_container(data_conf).items() if k not in _LOADER_KEYS}
            return json.dumps(
                {
                    "data": data,
                    "split": split,
                    "num_epochs": fc.num_epochs,
                    "extractor": to_container(conf.model.extractor),
                    "num_keypoints": model.num_keypoints,
                },
                sort_keys=True,
            )

        export_features(
            train_set,
            model,
            paths["train"],
            fc.num_epochs,
            fc.batch_size,
            device=device,
            progress=progress,
            fingerprint=fingerprint(conf.data, "train"),
        )
        export_features(
            val_set,
            model,
            paths["val"],
            1,
            fc.batch_size,
            device=device,
            progress=progress,
            fingerprint=fingerprint(conf.data_val or conf.data, "val"),
        )
    dist_lib.barrier()
    return CachedPairs(paths["train"]), CachedPairs(paths["val"])
