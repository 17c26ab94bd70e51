"""`tiepoint match IMAGES OUT` (every pair of a folder) and `tiepoint match --pairs FILE IMAGES OUT`.

All pairs go to one h5 file (docs/many_pairs.md): each image's features once under `features/`,
each pair's matches under `matches/` without keypoints (reconstruction's features.h5 + matches.h5
layouts, side by side in one file). Dense pipelines have no features: their match groups carry
the keypoints and leave out the dense warp (megabytes a pair).

Resumable and atomic: every result is appended to a crash-safe part file (`<OUT>.part`,
reconstruction's `records.py`) as it is made; at the end the part file and the pairs already in
OUT are written to a new h5 that replaces OUT in one step. A rerun after a kill skips the pairs
(and reuses the features) found in either, so at most the pair in flight is lost.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path, partial_path
from .errors import ConfigError, DatasetError
from .reconstruction.features_io import names_to_pair
from .reconstruction.inputs import list_images, require_images
from .reconstruction.pairs import exhaustive, pair_lines
from .reconstruction.records import PartWriter, iter_records
from .types import TIME_PREFIX, Features, MatchResult, write_group

log = logging.getLogger("tiepoint")

FEATURES, MATCHES = "features", "matches"  # the two top-level groups of the file
IDENTITY = "tiepoint_pipeline_conf"  # root attr: the pipeline config that made the file
_ID_RECORD = "#identity"


def read_pairs_file(path: str | os.PathLike, names: set[str]) -> list[tuple[str, str]]:
    """Pairs of a hloc-style pairs file (`name0 name1` a line, names relative to the image folder;
    further columns, such as ground truth, are ignored). `#` comments and blank lines are
    skipped; a duplicate pair (either order) or a self-pair is skipped with a warning; a line
    that is not a pair or names an image not in `names` is an error naming file and line."""
    path = Path(path)
    seen: dict[frozenset, int] = {}
    pairs = []
    for ln, a, b in pair_lines(path):
        for name in (a, b):
            if name not in names:
                raise DatasetError(f"{path}:{ln}: image '{name}' not found in the image folder")
        if a == b:
            log.warning(f"{path}:{ln}: pair of '{a}' with itself, skipped")
            continue
        key = frozenset((a, b))
        if key in seen:
            log.warning(f"{path}:{ln}: duplicate of line {seen[key]} ({a} {b}), skipped")
            continue
        seen[key] = ln
        pairs.append((a, b))
    if not pairs:
        raise DatasetError(f"{path}: no pairs in the file (only comments or blank lines)")
    return pairs


def output_file(out: str | os.PathLike) -> Path:
    """OUT itself when it ends in .h5, else OUT/matches.h5."""
    out = Path(out)
    return out if out.suffix == ".h5" else out / "matches.h5"


def plan(images_dir, out: Path, pairs_file=None) -> tuple[list[str], list[tuple[str, str]]]:
    """Image names (relative to the folder) and the pairs to match: the file's, or all of them."""
    images = list_images(images_dir, exclude=[out.parent] if out.parent != Path(images_dir) else [])
    if images.skipped:
        log.warning(f"skipped: {images.report_skipped()}")
    if pairs_file is not None:
        return images.names, read_pairs_file(pairs_file, set(images.names))
    require_images(images)
    return images.names, exhaustive(images.names)


def _pair_record(a: str, b: str) -> str:
    return f"m:{a}\n{b}"


def _check_identity(where, found: str | None, identity: str) -> None:
    if found is not None and found != identity:
        raise ConfigError(
            f"{where} was written with another pipeline configuration; remove it or choose "
            "another output to match with this one"
        )


def _existing(out: Path, identity: str) -> tuple[set[tuple[str, str]], h5py.File | None]:
    """The pairs already in OUT (and the open file, to read its features from), or none."""
    if not out.exists():
        return set(), None
    try:
        f = h5py.File(out, "r")
    except OSError as e:
        raise DatasetError(f"{out}: cannot read h5 file ({str(e).splitlines()[0]})") from None
    _check_identity(out, f.attrs.get(IDENTITY), identity)
    done = set()
    if MATCHES in f:
        f[MATCHES].visititems(
            lambda _, g: (
                done.add((g.attrs["image0"], g.attrs["image1"]))
                if isinstance(g, h5py.Group) and "image0" in g.attrs
                else None
            )
        )
    return done, f


def _read_part(part: Path, identity: str):
    """Features and match records of a part file left by a killed run."""
    feats: dict[str, Features] = {}
    matches: dict[tuple[str, str], dict] = {}
    if not part.exists():
        return feats, matches
    for name, arrays in iter_records(part):
        if name == _ID_RECORD:
            _check_identity(part, bytes(arrays["conf"]).decode(), identity)
        elif name.startswith("f:"):
            feats[name[2:]] = Features.from_arrays(arrays, where=f"{part}:{name}")
        elif name.startswith("m:"):
            a, b = name[2:].split("\n")
            matches[a, b] = arrays
    return feats, matches


def match_many(matcher, images_dir, out, pairs: list[tuple[str, str]], batch_size: int = 1) -> dict:
    """Match `pairs` of images in `images_dir` into the h5 file `out`, resuming; a summary."""
    from omegaconf import OmegaConf

    out = Path(out)
    identity = OmegaConf.to_yaml(matcher.conf)
    dense = matcher.dense is not None
    part = partial_path(out)
    done_before, old = _existing(out, identity)
    part_feats, part_matches = _read_part(part, identity)
    done = done_before | set(part_matches)
    todo = [p for p in pairs if p not in done and p[::-1] not in done]
    features = dict(part_feats)
    if old is not None and FEATURES in old:
        for name in {n for p in todo for n in p} - set(features):
            if name in old[FEATURES]:
                features[name] = Features.from_h5(old[FEATURES][name])
    if old is not None:
        old.close()
    written = set(part_feats)
    t0 = time.perf_counter()
    with PartWriter(part) as w:
        if _ID_RECORD not in w.names:
            w.append(_ID_RECORD, {"conf": np.frombuffer(identity.encode(), np.uint8)})
        results = matcher.match_pairs(
            todo, features=None if dense else features, batch_size=batch_size, root=images_dir
        )
        for a, b, r in results:
            for name in (a, b):
                if not dense and name not in written:
                    w.append(f"f:{name}", features[name].to_arrays())
                    written.add(name)
            r.dense = None
            part_matches[a, b] = r.to_arrays(keypoints=dense) | {
                f"{TIME_PREFIX}{k}": np.float64(v) for k, v in r.timings.items()
            }
            w.append(_pair_record(a, b), part_matches[a, b])
    seconds = time.perf_counter() - t0
    _merge(out, part, features, part_matches, matcher.name, identity, images_dir)
    return {
        "pairs": len(pairs),
        "matched": len(todo),
        "skipped": len(pairs) - len(todo),
        "seconds": seconds,
        "out": out,
    }


def _merge(out: Path, part: Path, features, matches, pipeline, identity, images_dir) -> None:
    """OUT ∪ the part file's records → a new OUT, replacing the old one in one step."""
    with atomic_path(out, copy_existing=True) as tmp, h5py.File(tmp, "a") as f:
        f.attrs["pipeline"] = pipeline
        f.attrs["images"] = str(images_dir)
        f.attrs[IDENTITY] = identity
        for (a, b), arrays in sorted(matches.items()):
            for name in (a, b):
                if name in features and f"{FEATURES}/{name}" not in f:
                    features[name].to_h5(f.require_group(f"{FEATURES}/{name}"))
            arrays = dict(arrays)
            times = {k: float(arrays.pop(k)) for k in list(arrays) if k.startswith(TIME_PREFIX)}
            g = f.require_group(f"{MATCHES}/{names_to_pair(a, b)}")
            write_group(g, arrays, MatchResult.FORMAT, times)  # the arrays of `to_arrays`
            g.attrs["image0"], g.attrs["image1"] = a, b
    if part.exists():
        part.unlink()


def read_pair(path: str | os.PathLike, name0: str, name1: str) -> MatchResult:
    """One pair's `MatchResult` (keypoints from `features/` when not in the pair's group)."""
    with h5py.File(path, "r") as f:
        key = f"{MATCHES}/{names_to_pair(name0, name1)}"
        if key not in f:
            raise DatasetError(f"{path}: no pair ({name0}, {name1})")
        g = f[key]
        if "keypoints0" in g:
            return MatchResult.from_h5(g)
        kp = [Features.from_h5(f[f"{FEATURES}/{n}"]).keypoints for n in (name0, name1)]
        return MatchResult.from_h5(g, *kp)
