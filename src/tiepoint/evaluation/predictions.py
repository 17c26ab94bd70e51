"""predictions.h5: one `MatchResult` group per pair (docs/formats.md), exported resumably.

Each pair is written and flushed with a `done` mark last, so an interrupted export resumes where
it stopped; a half-written group is dropped and redone, and a file HDF5 cannot open is set aside.
Only the public `tiepoint.Matcher` API is used: `extract` + `match_features` (with a feature cache:
HPatches reuses image 1 five times) for sparse pipelines, `match(path0, path1)` per pair for dense
ones (a dense model sees both images at once). A dense result's warp is large (DKM: 2×864×1152×4
floats a pair), so it is dropped from the predictions unless `store_dense`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import OrderedDict
from pathlib import Path

import h5py
from tqdm import tqdm

from ..errors import DatasetError, ImageError
from ..types import MatchResult
from .benchmarks import Pair

logger = logging.getLogger("tiepoint")


def pair_key(name: str) -> str:
    """A pair name as one flat HDF5 group name."""
    return name.replace("/", "|")


def open_predictions(path: Path) -> h5py.File:
    """Open for appending; a file that HDF5 cannot read (crash mid-write) is set aside, not trusted."""
    try:
        return h5py.File(path, "a")
    except OSError as e:
        bad = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        logger.warning("%s is unreadable (%s); moved to %s and starting over", path, e, bad.name)
        os.replace(path, bad)
        return h5py.File(path, "a")


def completed_pairs(f: h5py.File) -> set[str]:
    """Keys of the pairs marked done; groups written partly before an interruption are deleted."""
    done = set()
    for key in list(f.keys()):
        if f[key].attrs.get("done", False):
            done.add(key)
        else:
            del f[key]
    return done


class _FeatureCache:
    """Features of recently seen images (HPatches reuses image 1 five times) and their cost."""

    def __init__(self, matcher, size: int = 4):
        self.matcher, self.size, self.items = matcher, size, OrderedDict()

    def __call__(self, path: Path, pair: Pair):
        key = str(path)
        if key in self.items:
            self.items.move_to_end(key)
            return self.items[key]
        t = time.perf_counter()
        try:
            cap, multiple = _cap(path, pair), pair.extra.get("multiple")
            kw = {"resize": cap} if cap is not None else {}  # only what the benchmark sets
            kw |= {"multiple": int(multiple)} if multiple else {}
            feats = self.matcher.extract(path, **kw)
        except ImageError as e:
            raise DatasetError(f"{pair.source or pair.name}: {e}") from None
        item = (feats, time.perf_counter() - t)
        self.items[key] = item
        if len(self.items) > self.size:
            self.items.popitem(last=False)
        return item


def _cap(path: Path, pair: Pair) -> int | None:
    """A benchmark's per-pair size cap (`extra["max_size"]`, long side; ZEB as GIM runs it):
    the cap when the image is larger, 0 (native size) when not, None when the pair has none."""
    cap = pair.extra.get("max_size")
    if cap is None:
        return None
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(cap) if max(im.size) > int(cap) else 0
    except OSError as e:
        raise ImageError(f"{path}: cannot read image ({e})") from None


def _match_dense(matcher, p: Pair, store_dense: bool) -> MatchResult:
    try:
        cap = p.extra.get("max_size")
        r = (
            matcher.match(p.image0, p.image1)
            if cap is None
            else matcher.match(p.image0, p.image1, cap)
        )
    except ImageError as e:
        raise DatasetError(f"{p.source or p.name}: {e}") from None
    if not store_dense:
        r.dense = None
    return r


def _match_sparse(matcher, cache: _FeatureCache, p: Pair) -> MatchResult:
    f0, t0 = cache(p.image0, p)
    f1, t1 = cache(p.image1, p)
    t = time.perf_counter()
    r = matcher.match_features(f0, f1)
    r.timings = {"extract": t0 + t1, "match": time.perf_counter() - t}
    return r


def export_predictions(
    pairs: list[Pair],
    path: Path,
    make_matcher,
    progress: bool = True,
    dense: bool = False,
    store_dense: bool = False,
) -> int:
    """Match every pair not yet in `path`; returns the number of pairs newly matched.

    `make_matcher()` is only called when there is something to match (no model load otherwise).
    `dense`: the pipeline is dense (match image pairs); `store_dense`: keep its warp/certainty.
    """
    with open_predictions(path) as f:
        done = completed_pairs(f)
        todo = [p for p in pairs if pair_key(p.name) not in done]
        if not todo:
            return 0
        if done:
            logger.info("resuming: %d of %d pairs already in %s", len(done), len(pairs), path.name)
        matcher = make_matcher()
        cache = _FeatureCache(matcher)
        for p in tqdm(todo, desc="matching", unit="pair", disable=not progress):
            r = _match_dense(matcher, p, store_dense) if dense else _match_sparse(matcher, cache, p)
            g = f.create_group(pair_key(p.name))
            r.to_h5(g)
            g.attrs["done"] = True  # written last: a group without it is redone on resume
            f.flush()
        return len(todo)


def load_prediction(f: h5py.File, p: Pair) -> MatchResult:
    key = pair_key(p.name)
    if key not in f:
        raise DatasetError(f"pair {p.name} missing from {f.filename}; run the export again")
    return MatchResult.from_h5(f[key])
