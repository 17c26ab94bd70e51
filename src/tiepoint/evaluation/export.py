"""The export step of `tiepoint eval` on reconstruction's executors: local, Ray actors, `--shard i/N`.

For benchmarks as large as ZEB (46K pairs). Workers (`ExportWorker`, built like reconstruction's
`Worker`) match their share of the pairs with the very code of the in-process export
(`predictions._match_sparse` / `_match_dense`) and append each `MatchResult` to their own
crash-safe part file (`records.py`) under `<results>/parts/`. The driver then merges the part
files into `predictions.h5` in the benchmark's pair order, each group marked `done` as before,
so the file, and the summaries computed from it, do not depend on who matched what.

`--shard i/N` matches the i-th contiguous block of the pairs still missing and stops; the run that
finds every pair matched (a shard's, or a plain `tiepoint eval` afterwards) merges and evaluates.
Merging takes each part file's lock, so it never reads a file a running shard still writes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from filelock import FileLock

from ..errors import DatasetError
from ..types import TIME_PREFIX, MatchResult
from .benchmarks import Pair
from .predictions import (
    _FeatureCache,
    _match_dense,
    _match_sparse,
    completed_pairs,
    open_predictions,
    pair_key,
)

logger = logging.getLogger("tiepoint")

PARTS = "parts"
PREFIX = "predictions"


@dataclass
class ExportSpec:
    """What an export worker needs to rebuild the matcher on its own (picklable, for Ray)."""

    out_dir: str
    model_conf: dict
    device: str | None = None
    weights: str | None = None
    dense: bool = False
    store_dense: bool = False
    torch_threads: int | None = None
    extra: dict = field(default_factory=dict)


class ExportWorker:
    """Match pairs with one loaded `Matcher`; each result goes to this worker's part file."""

    factory = None  # tests inject a matcher factory (conf → matcher), as `runner.run` allows

    def __init__(self, spec: ExportSpec, name: str):
        import torch

        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        if ExportWorker.factory is not None:
            self.matcher = ExportWorker.factory(spec.model_conf)
        else:
            from ..api import Matcher

            self.matcher = Matcher(spec.model_conf, device=spec.device, weights=spec.weights)
        self.cache = _FeatureCache(self.matcher)
        self.path = Path(spec.out_dir) / PARTS / f"{PREFIX}.{name}.log"
        self._writer = None

    def match(self, pairs: list[Pair]) -> list[tuple[str, str | None]]:
        from ..reconstruction.records import PartWriter

        if self._writer is None:
            self._writer = PartWriter(self.path)
        out = []
        for p in pairs:
            try:
                if self.spec.dense:
                    r = _match_dense(self.matcher, p, self.spec.store_dense)
                else:
                    r = _match_sparse(self.matcher, self.cache, p)
            except DatasetError as e:
                out.append((p.name, str(e)))
                continue
            times = {f"{TIME_PREFIX}{k}": np.float64(v) for k, v in r.timings.items()}
            self._writer.append(p.name, r.to_arrays() | times)
            out.append((p.name, None))
        return out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def ping(self) -> bool:
        return True


def parts_done(out: Path) -> set[str]:
    """Names of the pairs stored in the part files under `out/parts`."""
    from ..reconstruction.records import scan

    return {n for part in (out / PARTS).glob(f"{PREFIX}.*.log") for n in scan(part)[0]}


def merge_parts(out: Path, pairs: list[Pair]) -> int:
    """Move the part files' results into predictions.h5 (pair order, `done` last); the merged
    part files are deleted. A part file a running shard holds is left alone. Returns the count."""

    with FileLock(str(out / "predictions.h5.lock")):  # one writer of predictions.h5 at a time
        return _merge_parts(out, pairs)


def _merge_parts(out: Path, pairs: list[Pair]) -> int:
    from ..reconstruction.records import iter_records, try_lock

    order = {p.name: i for i, p in enumerate(pairs)}
    parts = sorted((out / PARTS).glob(f"{PREFIX}.*.log"))
    locks = [lock for lock in (try_lock(p) for p in parts) if lock is not None]
    held = [Path(lock.path) for lock in locks]
    if len(held) < len(parts):
        logger.info(
            "%d part file(s) still being written (a shard running): left for later",
            len(parts) - len(held),
        )
    try:
        records = {}
        for part in held:
            for name, arrays in iter_records(part):
                if name in order:
                    records[name] = arrays
        with open_predictions(out / "predictions.h5") as f:
            done = completed_pairs(f)
            for name in sorted(records, key=order.__getitem__):
                if pair_key(name) in done:
                    continue
                arrays = dict(records[name])
                attrs = {k: float(arrays.pop(k)) for k in list(arrays) if k.startswith(TIME_PREFIX)}
                r = MatchResult.from_arrays(arrays, attrs=attrs, where=f"{out / PARTS}:{name}")
                g = f.create_group(pair_key(name))
                r.to_h5(g)
                g.attrs["done"] = True
            f.flush()
        for part in held:
            part.unlink()
    finally:
        for lock in locks:
            lock.__exit__()
    return len(records)


def export_with_executor(
    pairs: list[Pair],
    out: Path,
    spec: ExportSpec,
    kind: str = "local",
    shard: tuple[int, int] | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> tuple[int, int]:
    """Match the pairs not yet in predictions.h5 or a part file (a shard: its block of them) on
    an executor, then merge. Returns (pairs matched now, pairs still missing)."""
    from ..reconstruction.executors import make_executor, shard_slice

    merge_parts(out, pairs)  # what earlier (killed or finished) runs left
    with FileLock(str(out / "predictions.h5.lock")), open_predictions(out / "predictions.h5") as f:
        done = completed_pairs(f)
    done |= {pair_key(n) for n in parts_done(out)}
    missing = [p for p in pairs if pair_key(p.name) not in done]
    # a shard's block is of the full pair list (the same whatever ran before), minus what is done
    todo = [p for p in shard_slice(pairs, shard) if pair_key(p.name) not in done]
    if todo:
        executor = make_executor(kind, spec, workers, ray_address, shard, worker_cls=ExportWorker)
        try:
            failures = executor.run("match", todo, "matching")
        finally:
            executor.close()
        if failures:
            name, err = next(iter(failures.items()))
            raise DatasetError(f"{len(failures)} pair(s) failed, e.g. {name}: {err}")
    left = len(missing) - len(todo)
    if left == 0:
        merge_parts(out, pairs)
    return len(todo), left
