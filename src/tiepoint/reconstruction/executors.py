"""Where extraction and matching run: in this process, or in Ray actors that keep the model loaded.

Both executors drive the same `Worker`, which appends every result to its own part file
(`records.py`); the driver merges part files into the h5 files afterwards, in sorted order, so the
output does not depend on the executor, the number of workers or the scheduling. Work is sent in
small contiguous batches of the sorted item list (pairs sharing an image stay together, so a
worker's feature cache stays warm), and a worker that finishes early gets the next batch.

Ray on several machines needs OUT on a filesystem all of them can see (NFS, Lustre, ...).
`--shard i/N` is the same thing without Ray: each batch job takes a contiguous block of items.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..errors import ConfigError, TiepointError
from ..images import exif_orientation
from . import features_io as fio
from .records import PartWriter

log = logging.getLogger("tiepoint")


@dataclass
class WorkerSpec:
    """Everything a worker needs to rebuild the pipeline on its own (it must be picklable)."""

    image_dir: str
    out_dir: str
    pipeline: str = "aliked+lightglue"
    resize: int | None = None
    device: str | None = None
    weights: str | None = None
    overrides: list[str] = field(default_factory=list)
    feature_tag: str = "features"  # part-file prefix: identity hash of the extraction
    match_tag: str = "matches"  # identity hash of extraction + matching
    torch_threads: int | None = None


def part_dirs(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    parts = Path(out_dir) / "parts"
    return parts / "features", parts / "matches"


class Worker:
    """Extract images and match pairs with one loaded `Matcher`; results go to part files."""

    def __init__(self, spec: WorkerSpec, name: str):
        import torch

        from ..api import Matcher

        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        self.spec = spec
        self.matcher = Matcher(
            spec.pipeline,
            resize=spec.resize,
            device=spec.device,
            weights=spec.weights,
            overrides=list(spec.overrides) or None,
        )
        feat_dir, match_dir = part_dirs(spec.out_dir)
        self.feature_parts = feat_dir
        self.feature_log = feat_dir / f"{spec.feature_tag}.{name}.log"
        self.match_log = match_dir / f"{spec.match_tag}.{name}.log"
        self._fw: PartWriter | None = None
        self._mw: PartWriter | None = None
        self._store: fio.FeatureStore | None = None

    # part writers are opened lazily so a matching worker does not lock an extraction part file
    def _features_writer(self) -> PartWriter:
        if self._fw is None:
            self._fw = PartWriter(self.feature_log)
        return self._fw

    def _matches_writer(self) -> PartWriter:
        if self._mw is None:
            self._mw = PartWriter(self.match_log)
        return self._mw

    def _extract_one(self, name: str) -> dict:
        """Extract on the upright image, store in the raw frame COLMAP reads (as COLMAP 4.2)."""
        path = Path(self.spec.image_dir) / name
        feats = self.matcher.extract(path)
        arrays = fio.to_raw_frame(fio.features_to_arrays(feats), exif_orientation(path))
        self._features_writer().append(name, arrays)
        return arrays

    def extract(self, names: list[str]) -> list[tuple[str, str | None]]:
        """Extract and store each image; returns (name, error message or None)."""
        out = []
        for name in names:
            try:
                self._extract_one(name)
                out.append((name, None))
            except TiepointError as e:
                out.append((name, str(e)))
        return out

    def _features(self, name: str) -> dict:
        if self._store is None:
            self._store = fio.FeatureStore(
                Path(self.spec.out_dir) / "features.h5",
                self.feature_parts,
                glob=f"{self.spec.feature_tag}.*.log",
            )
        if name not in self._store:
            self._store.refresh()  # another worker or shard may have extracted it meanwhile
        if name in self._store:
            return self._store.arrays(name)
        arrays = self._extract_one(name)  # not extracted yet (e.g. a shard): do it here, once
        self._store.add(name, arrays)
        return arrays

    def match(self, pairs: list[tuple[str, str]]) -> list[tuple[tuple[str, str], str | None]]:
        """Match and store each pair; returns (pair, error message or None)."""
        if self.matcher.dense is not None:
            return self._match_dense(pairs)
        out = []
        for a, b in pairs:
            try:
                fa, fb = self._features(a), self._features(b)
                result = self.matcher.match_features(  # in the frame they were extracted in
                    fio.arrays_to_features(fio.to_upright_frame(fa)),
                    fio.arrays_to_features(fio.to_upright_frame(fb)),
                )
                arrays = fio.match_to_arrays(result, len(fa["keypoints"]))
                self._matches_writer().append(fio.names_to_pair(a, b), arrays)
                out.append(((a, b), None))
            except TiepointError as e:
                out.append(((a, b), str(e)))
        return out

    def _match_dense(self, pairs: list[tuple[str, str]]) -> list:
        """Dense pipelines: match the two images (upright), store the sampled matches in the raw
        frame; the driver quantises them into per-image keypoints once all pairs are done."""
        from .dense_keypoints import pair_record

        out = []
        root = Path(self.spec.image_dir)
        for a, b in pairs:
            try:
                result = self.matcher.match(root / a, root / b)
                arrays = pair_record(result, exif_orientation(root / a), exif_orientation(root / b))
                self._matches_writer().append(fio.names_to_pair(a, b), arrays)
                out.append(((a, b), None))
            except TiepointError as e:
                out.append(((a, b), str(e)))
        return out

    def close(self) -> None:
        """Release the part files (the driver merges them next); the model stays loaded."""
        for w in (self._fw, self._mw):
            if w is not None:
                w.close()
        if self._store is not None:
            self._store.close()
        self._fw = self._mw = self._store = None

    def ping(self) -> bool:
        return True


def shard_slice(items: list, shard: tuple[int, int] | None) -> list:
    """The `i`-th of `n` contiguous blocks of `items` (all of them when `shard` is None)."""
    if shard is None:
        return items
    i, n = shard
    return items[i * len(items) // n : (i + 1) * len(items) // n]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d+)/(\d+)", text.strip())
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise ConfigError(f"--shard '{text}': expected i/N with 0 <= i < N, e.g. 0/4")
    return int(m.group(1)), int(m.group(2))


class LocalExecutor:
    """One worker in this process. `worker_cls` (default `Worker`) lets other steps (the
    evaluation export) run on the same executors: any class built as `cls(spec, name)` whose
    methods take a list of items and return (key, error or None) pairs, with `close` and `ping`."""

    def __init__(self, spec: WorkerSpec, name: str = "local", worker_cls: type = None):
        self.spec, self.name = spec, name
        self.worker_cls = worker_cls or Worker  # any class with (spec, name), close(), ping()
        self._worker: Worker | None = None

    @property
    def worker(self):
        if self._worker is None:
            self._worker = self.worker_cls(self.spec, self.name)
        return self._worker

    def run(self, method: str, items: list, desc: str) -> dict:
        failures = {}
        fn: Callable = getattr(self.worker, method)
        for item in tqdm(items, desc=desc, unit="item"):
            for key, err in fn([item]):
                if err:
                    failures[key] = err
        self.worker.close()  # release part files: the driver merges them next
        return failures

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


class RayExecutor:
    """`num_workers` Ray actors, each with its own loaded model and its own part files."""

    def __init__(
        self,
        spec,
        num_workers: int | None = None,
        address: str | None = None,
        num_cpus: float = 1,
        num_gpus: float | None = None,
        batch_size: int = 4,
        worker_cls: type = None,
    ):
        try:
            import ray
        except ImportError:
            raise ConfigError("--executor ray needs Ray: pip install 'tiepoint[ray]'") from None
        self.ray = ray
        self._own_cluster = False
        if not ray.is_initialized():
            kwargs = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
            }
            if address:
                ray.init(address=address, **kwargs)
            else:
                ray.init(num_cpus=num_workers or os.cpu_count(), **kwargs)
                self._own_cluster = True
        if num_gpus is None:
            num_gpus = 1 if (spec.device or "").startswith("cuda") else 0
        if num_workers is None:
            cpus = ray.cluster_resources().get("CPU", 1)
            num_workers = max(1, int(cpus // num_cpus))
        if spec.torch_threads is None:
            spec = dataclasses.replace(spec, torch_threads=max(1, int(num_cpus)))
        actor = ray.remote(worker_cls or Worker).options(num_cpus=num_cpus, num_gpus=num_gpus)
        self.actors = [actor.remote(spec, f"ray-w{k}") for k in range(num_workers)]
        self.batch_size = batch_size
        self.items_per_worker = [0] * num_workers  # how the work was spread (reported, tested)
        try:
            ray.get([a.ping.remote() for a in self.actors])
        except (
            ray.exceptions.RayError
        ) as e:  # a worker that cannot load the model: say why, in one line
            raise TiepointError(f"Ray workers failed to start: {_ray_cause(e)}") from None

    def run(self, method: str, items: list, desc: str) -> dict:
        ray = self.ray
        batches = [items[s : s + self.batch_size] for s in range(0, len(items), self.batch_size)]
        failures = {}
        pending: dict = {}
        free = list(self.actors) * 2  # two batches in flight per actor hide the round trip
        bar = tqdm(total=len(items), desc=desc, unit="item")
        try:
            while batches or pending:
                while batches and free:
                    a = free.pop(0)
                    batch = batches.pop(0)
                    pending[getattr(a, method).remote(batch)] = (a, len(batch))
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    a, n = pending.pop(ref)
                    try:
                        results = ray.get(ref)
                    except ray.exceptions.RayError as e:
                        raise TiepointError(f"a Ray worker failed: {_ray_cause(e)}") from None
                    failures.update({k: err for k, err in results if err})
                    self.items_per_worker[self.actors.index(a)] += n
                    bar.update(n)
                    free.append(a)
        finally:
            bar.close()
        ray.get([a.close.remote() for a in self.actors])
        return failures

    def close(self) -> None:
        for a in self.actors:
            try:
                self.ray.get(a.close.remote())
            except self.ray.exceptions.RayError as e:  # already dead: nothing to release
                log.debug("closing a Ray worker: %s", e)
            self.ray.kill(a)
        self.actors = []
        if self._own_cluster:
            self.ray.shutdown()


def _ray_cause(e: Exception) -> str:
    cause = getattr(e, "cause", None) or e
    return str(cause).strip().splitlines()[-1] if str(cause).strip() else type(cause).__name__


def make_executor(
    kind: str,
    spec: WorkerSpec,
    workers: int | None = None,
    ray_address: str | None = None,
    shard: tuple[int, int] | None = None,
    worker_cls: type = None,
):
    """`worker_cls` (default: reconstruction's `Worker`) lets other steps (video labelling and
    propagation) run on the same executors."""
    if kind == "local":
        name = f"shard-{shard[0]}-of-{shard[1]}" if shard else "local"
        return LocalExecutor(spec, name, worker_cls)
    if kind == "ray":
        if shard:
            raise ConfigError("--shard is for batch schedulers without Ray; use one or the other")
        return RayExecutor(spec, num_workers=workers, address=ray_address, worker_cls=worker_cls)
    raise ConfigError(f"--executor '{kind}': expected 'local' or 'ray'")
