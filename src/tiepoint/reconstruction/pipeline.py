"""Folder of images → features.h5 → pairs.txt → matches.h5 → COLMAP model, resumable at each step.

OUT/
  features.h5, matches.h5, pairs.txt, global-feats.h5 (retrieval) — hloc layout
  dense-matches.h5      — dense pipelines: each pair's sampled matches, before they are quantised
                          into per-image keypoints (dense_keypoints.py) that fill features.h5
                          (keypoints + scores, no descriptors) and matches.h5
  parts/                — per-worker part files of a running or killed run (merged, then deleted)
  database.db, sparse/, points.ply, summary.json, colmap.log
Every stage skips what is already in its output or in a part file, so rerunning the same command
after a crash resumes where it stopped. Outputs record the configuration that made them; a rerun
with another one is refused instead of mixing results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import OmegaConf

from ..atomic import atomic_write_text
from ..errors import ConfigError, DatasetError
from . import colmap, retrieval
from . import features_io as fio
from . import pairs as pairs_mod
from .executors import WorkerSpec, make_executor, part_dirs, shard_slice
from .inputs import ImageSet, list_images, require_images
from .pairs import PairSpec

log = logging.getLogger("tiepoint")


@dataclass
class Options:
    pipeline: str = "aliked+lightglue"
    resize: int | None = None  # None: the pipeline's preset
    device: str | None = None
    weights: str | None = None
    overrides: list[str] = field(default_factory=list)
    pairs: str = "exhaustive"
    executor: str = "local"
    ray_address: str | None = None
    workers: int | None = None
    shard: tuple[int, int] | None = None
    dense_cell: float = 2.0  # dense pipelines: keypoint grid cell, px of the stored image
    mapper: colmap.MapperOptions = field(default_factory=colmap.MapperOptions)


@dataclass
class StageStats:
    total: int = 0
    already_done: int = 0
    computed: int = 0
    failed: dict = field(default_factory=dict)
    seconds: float = 0.0


def identities(opts: Options) -> tuple[dict, dict]:
    """What determines the features, and what determines the matches (recorded in the h5 files).

    Dense pipelines: (the raw dense matches', the quantised features' and matches')."""
    from ..api import pipeline_conf

    conf = pipeline_conf(opts.pipeline, opts.overrides or None)
    if opts.resize is not None:
        conf.preprocessing.resize = opts.resize if opts.resize > 0 else None
    plain = OmegaConf.to_container(conf, resolve=True)
    if "dense" in plain:
        raw = {"preprocessing": plain["preprocessing"], "dense": plain["dense"]}
        raw["weights"] = opts.weights
        return raw, {**raw, "dense_cell": float(opts.dense_cell)}
    feat = {"preprocessing": plain["preprocessing"], "extractor": plain["extractor"]}
    match = {**feat, "matcher": plain["matcher"], "weights": opts.weights}
    return feat, match


def _tag(identity: dict) -> str:
    return hashlib.sha1(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:10]


class Reconstruction:
    """One output folder and the steps that fill it. Use as a context manager (closes workers)."""

    def __init__(self, image_dir, out_dir, opts: Options | None = None):
        self.opts = opts or Options()
        self.opts.mapper.check()
        self.out = Path(out_dir)
        self.images: ImageSet = list_images(image_dir, exclude=[self.out])
        require_images(self.images)
        self.feat_id, self.match_id = identities(self.opts)
        self.feat_tag, self.match_tag = _tag(self.feat_id), _tag(self.match_id)
        self.features_h5 = self.out / "features.h5"
        self.matches_h5 = self.out / "matches.h5"
        self.pairs_txt = self.out / "pairs.txt"
        self.feat_parts, self.match_parts = part_dirs(self.out)
        # dense: workers write raw pair matches (identity feat_id); features.h5 and matches.h5
        # are rebuilt from them (identity match_id)
        self.dense = "dense" in self.feat_id
        self.pair_h5 = self.out / "dense-matches.h5" if self.dense else self.matches_h5
        self.pair_id = self.feat_id if self.dense else self.match_id
        fio.check_identity(self.features_h5, self.match_id if self.dense else self.feat_id)
        fio.check_identity(self.matches_h5, self.match_id)
        fio.check_identity(self.pair_h5, self.pair_id)
        self.failed_images: dict[str, str] = {}
        self._executor = None

    # -- plumbing ------------------------------------------------------------------------------
    @property
    def executor(self):
        if self._executor is None:
            o = self.opts
            spec = WorkerSpec(
                str(self.images.root),
                str(self.out),
                o.pipeline,
                o.resize,
                o.device,
                o.weights,
                list(o.overrides),
                self.feat_tag,
                self.feat_tag if self.dense else self.match_tag,
            )
            self._executor = make_executor(o.executor, spec, o.workers, o.ray_address, o.shard)
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.close()
            self._executor = None

    def __enter__(self) -> Reconstruction:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _store(self) -> fio.FeatureStore:
        return fio.FeatureStore(self.features_h5, self.feat_parts, glob=f"{self.feat_tag}.*.log")

    def _merge(self, h5: Path, part_dir: Path, tag: str, identity: dict, leaf: str) -> None:
        if self.opts.shard is None and part_dir.exists():  # shards never merge: one writer per h5
            fio.merge_parts(h5, sorted(part_dir.glob(f"{tag}.*.log")), identity, leaf)

    @property
    def names(self) -> list[str]:
        return [n for n in self.images.names if n not in self.failed_images]

    # -- steps ---------------------------------------------------------------------------------
    def extract(self) -> StageStats:
        if self.dense:  # a dense model matches image pairs; keypoints come from its matches
            return StageStats(total=len(self.images.names), already_done=len(self.images.names))
        t0 = time.perf_counter()
        store = self._store()
        todo_all = [n for n in self.images.names if n not in store]
        store.close()
        todo = shard_slice(
            todo_all if self.opts.shard is None else self.images.names, self.opts.shard
        )
        todo = [n for n in todo if n in todo_all]
        stats = StageStats(
            total=len(self.images.names), already_done=len(self.images.names) - len(todo_all)
        )
        if todo:
            stats.failed = self.executor.run("extract", todo, desc="extract")
            stats.computed = len(todo) - len(stats.failed)
        self.failed_images.update(stats.failed)
        self._merge(self.features_h5, self.feat_parts, self.feat_tag, self.feat_id, "keypoints")
        stats.seconds = time.perf_counter() - t0
        return stats

    def make_pairs(self) -> list[tuple[str, str]]:
        spec = PairSpec.parse(self.opts.pairs)
        names = self.names
        if spec.kind == "exhaustive":
            pairs = pairs_mod.exhaustive(names)
        elif spec.kind == "sequential":
            pairs = pairs_mod.sequential(names, spec.n)
        else:
            if self.dense:
                raise ConfigError(
                    f"retrieval pairs need local features; pipeline '{self.opts.pipeline}' is "
                    "dense: use --pairs exhaustive or sequential:N"
                )
            store = self._store()
            missing = [n for n in names if n not in store]
            if missing:
                store.close()
                raise DatasetError(
                    f"retrieval pairs need the features of every image; {len(missing)} are not "
                    f"extracted yet (e.g. {missing[0]}): run `tiepoint extract` (all shards) first"
                )
            desc = retrieval.global_descriptors(store, names)
            store.close()
            if self.opts.shard is None:
                retrieval.write_global_descriptors(self.out / "global-feats.h5", names, desc)
            pairs = pairs_mod.retrieval(names, desc, spec.n)
        pairs_mod.write_pairs(self.pairs_txt, pairs)
        return pairs

    def matched_keys(self) -> set[str]:
        keys = fio.list_h5_names(self.pair_h5, "matches0")
        if self.match_parts.exists():
            from . import records

            tag = self.feat_tag if self.dense else self.match_tag
            for p in self.match_parts.glob(f"{tag}.*.log"):
                keys |= set(records.scan(p)[0])
        return keys

    def match(self, pairs: list[tuple[str, str]]) -> StageStats:
        t0 = time.perf_counter()
        known = set(self.images.names)
        bad = [p for p in pairs if p[0] not in known or p[1] not in known]
        if bad:
            raise DatasetError(f"pair {bad[0]} names an image that is not in {self.images.root}")
        pairs = [
            p for p in pairs if p[0] not in self.failed_images and p[1] not in self.failed_images
        ]
        done = self.matched_keys()
        is_done = lambda a, b: fio.names_to_pair(a, b) in done or fio.names_to_pair(b, a) in done
        todo_all = [p for p in pairs if not is_done(*p)]
        todo = [p for p in shard_slice(pairs, self.opts.shard) if not is_done(*p)]
        stats = StageStats(total=len(pairs), already_done=len(pairs) - len(todo_all))
        if todo:
            stats.failed = self.executor.run("match", todo, desc="match")
            stats.computed = len(todo) - len(stats.failed)
        if self.dense:
            self._merge(self.pair_h5, self.match_parts, self.feat_tag, self.pair_id, "matches0")
            if self.opts.shard is None and self.pair_h5.exists():
                self.quantise(pairs)
        else:
            self._merge(
                self.matches_h5, self.match_parts, self.match_tag, self.match_id, "matches0"
            )
            self._merge(self.features_h5, self.feat_parts, self.feat_tag, self.feat_id, "keypoints")
        stats.seconds = time.perf_counter() - t0
        return stats

    def quantise(self, pairs: list[tuple[str, str]]) -> None:
        """Dense: per-image keypoints from all pairs' matches → features.h5 and matches.h5."""
        from .dense_keypoints import write_quantised

        q = write_quantised(
            self.pair_h5,
            pairs,
            self.names,
            self.images.root,
            self.features_h5,
            self.matches_h5,
            self.match_id,
            self.opts.dense_cell,
        )
        n = sum(len(k) for k in q.keypoints.values())
        log.info(
            "dense matches of %d pairs → %d keypoints (%g px cells)",
            len(q.matches),
            n,
            self.opts.dense_cell,
        )

    def map(self, pairs: list[tuple[str, str]]) -> colmap.Summary:
        """COLMAP database, verification and mapping; writes sparse/, points.ply, summary.json."""
        mo = self.opts.mapper
        names = self.names
        keep = set(names)
        pairs = [p for p in pairs if p[0] in keep and p[1] in keep]
        db = self.out / "database.db"
        work = self.out / ".mapping"
        shutil.rmtree(work, ignore_errors=True)
        with colmap.colmap_logging(self.out / "colmap.log", mo.verbose):
            if not self.matches_h5.exists():
                verified, models, mapper = {}, {}, mo.mapper
            else:
                colmap.build_database(
                    db, self.images.root, names, self.features_h5, self.matches_h5, pairs, mo
                )
                verified = colmap.verify(db, pairs, mo)
                models, mapper = (
                    colmap.run_mapping(db, self.images.root, work, mo, len(names))
                    if verified
                    else ({}, mo.mapper)
                )
        summary, best = colmap.summarize(models, names, pairs, verified, mo, mapper)
        for n, why in self.failed_images.items():
            summary.unregistered[n] = f"feature extraction failed: {why}"
        summary.num_images = len(self.images.names)
        summary.skipped_files = dict(self.images.skipped)
        if best is not None and summary.registered:
            colmap.write_model(best, self.out / "sparse", self.out / "points.ply")
            summary.model_path = str(self.out / "sparse")
        else:
            # a stale model from an earlier run must not pass for this run's result
            shutil.rmtree(self.out / "sparse", ignore_errors=True)
            (self.out / "points.ply").unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)
        atomic_write_text(self.out / "summary.json", json.dumps(summary.to_dict(), indent=2) + "\n")
        return summary

    def run(self) -> tuple[colmap.Summary | None, dict]:
        """All steps. With a shard, only this shard's extraction and matching (no merge, no map)."""
        stats = {"extract": self.extract()}
        pairs = self.make_pairs()
        stats["match"] = self.match(pairs)
        if self.opts.shard is not None:
            return None, stats
        return self.map(pairs), stats


def reconstruct(image_dir, out_dir, opts: Options | None = None):
    """Python entry point of `tiepoint reconstruct`: returns (Summary or None for a shard, stats)."""
    with Reconstruction(image_dir, out_dir, opts) as r:
        return r.run()
