"""hloc's h5 layout for local features and matches, so hloc users can read what we write.

features.h5: one `Features` group (types.py, docs/formats.md) per image name (a `/` in the name
  makes nested groups): `keypoints` (N,2), `descriptors` (D,N) as hloc stores them, `scores`,
  `image_size`, extras such as `scales`, `oris`.
  Keypoints and `image_size` are in the stored (raw) image frame, as COLMAP reads the files; the
  group attribute `exif_orientation` (1–8) says how the image was rotated for extraction
  (`to_raw_frame` / `to_upright_frame` convert; matching runs in the upright frame).
matches.h5: one `MatchResult` group without keypoints per pair, at `names_to_pair(name0, name1)`
  = name0 and name1 with `/` → `-`, joined by `/`: `matches0` (N0,) int32 (−1: unmatched),
  `matching_scores0` (N0,) float32, `image_size0`/`image_size1`.
hloc stores matches0 as int16 and floats as fp16; we keep int32/fp32 (no overflow above 32767
keypoints, lossless round trip); hloc's readers accept both.

Both files are only ever written by one process, by copying, appending and renaming, so a crash
never leaves a half-written h5 behind. Workers write part files (`records.py`) instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import ConfigError, DatasetError
from ..images import raw_to_upright, upright_size, upright_to_raw
from ..types import Features, MatchResult, matches_from_arrays
from ..types import read_group as _read_group
from ..types import write_group as _write_group
from . import records

log = logging.getLogger("tiepoint")

LEAF_FORMAT = {"keypoints": Features.FORMAT, "matches0": MatchResult.FORMAT}
IDENTITY_ATTR = "tiepoint_conf"
GROUP_ATTRS = ("exif_orientation",)  # stored as attributes of a feature group, not datasets


def names_to_pair(name0: str, name1: str, separator: str = "/") -> str:
    """hloc's pair key: nested groups, `/` inside names flattened to `-`."""
    return separator.join((name0.replace("/", "-"), name1.replace("/", "-")))


def names_to_pair_old(name0: str, name1: str) -> str:
    return names_to_pair(name0, name1, separator="_")


# ---- conversion between the public types and stored arrays (the layout lives in types.py) ------


def features_to_arrays(feats: Features) -> dict[str, np.ndarray]:
    """`tiepoint.Features` → the arrays of one hloc feature group."""
    return feats.to_arrays()


def arrays_to_features(arrays: dict[str, np.ndarray]) -> Features:
    """The arrays of one feature group → `tiepoint.Features` (descriptors back to (N,D))."""
    return Features.from_arrays(arrays)


def match_to_arrays(result: MatchResult, num_keypoints0: int) -> dict[str, np.ndarray]:
    """`MatchResult` → hloc's dense per-keypoint `matches0` / `matching_scores0` (keypoints stay
    in features.h5)."""
    if len(result.keypoints0) != num_keypoints0:
        raise DatasetError(
            f"match result has {len(result.keypoints0)} keypoints0, features {num_keypoints0}"
        )
    return result.to_arrays(keypoints=False)


def arrays_to_matches(arrays: dict[str, np.ndarray], reverse: bool = False):
    """hloc `matches0` → (M,2) index pairs and scores, swapped when the pair was stored reversed."""
    matches, scores = matches_from_arrays(arrays)
    if reverse:
        matches = matches[:, ::-1].copy()
    return matches, scores


def to_raw_frame(arrays: dict[str, np.ndarray], orientation: int) -> dict[str, np.ndarray]:
    """Arrays of features extracted on the upright image → the stored frame, orientation kept."""
    out = dict(arrays)
    out["exif_orientation"] = np.asarray(orientation, dtype=np.int64)
    if orientation == 1:
        return out
    w, h = (int(x) for x in np.asarray(arrays["image_size"]).reshape(2))
    raw = (h, w) if orientation >= 5 else (w, h)
    out["keypoints"] = upright_to_raw(arrays["keypoints"], orientation, raw)
    out["image_size"] = np.asarray(raw, dtype=np.asarray(arrays["image_size"]).dtype)
    return out


def to_upright_frame(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Stored-frame arrays → the upright frame the features were extracted in (for matching)."""
    out = dict(arrays)
    orientation = int(out.pop("exif_orientation", 1))
    if orientation == 1:
        return out
    raw = tuple(int(x) for x in np.asarray(arrays["image_size"]).reshape(2))
    out["keypoints"] = raw_to_upright(arrays["keypoints"], orientation, raw)
    out["image_size"] = np.asarray(
        upright_size(raw, orientation), dtype=np.asarray(arrays["image_size"]).dtype
    )
    return out


# ---- h5 reading -------------------------------------------------------------------------------


def list_h5_names(path: str | os.PathLike, leaf: str) -> set[str]:
    """Names of the groups holding a `leaf` dataset, with their full (nested) path."""
    path = Path(path)
    names: set[str] = set()
    if not path.exists():
        return names

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] == leaf:
            names.add(name.rsplit("/", 1)[0])

    try:
        with h5py.File(path, "r") as f:
            f.visititems(visit)
    except OSError as e:
        raise DatasetError(f"{path}: cannot read h5 file ({str(e).splitlines()[0]})") from None
    return names


def read_group(f: h5py.File, key: str) -> dict[str, np.ndarray]:
    g = f[key]
    out = _read_group(g)
    out.update({k: np.asarray(g.attrs[k]) for k in GROUP_ATTRS if k in g.attrs})
    return out


def find_pair(f: h5py.File, name0: str, name1: str) -> tuple[str, bool] | None:
    """Key of a pair in a matches file and whether it is stored reversed (hloc's naming variants)."""
    for key, rev in (
        (names_to_pair(name0, name1), False),
        (names_to_pair(name1, name0), True),
        (names_to_pair_old(name0, name1), False),
        (names_to_pair_old(name1, name0), True),
    ):
        if key in f and "matches0" in f[key]:
            return key, rev
    return None


def read_matches(path: str | os.PathLike, name0: str, name1: str):
    """(M,2) indices into the keypoints of name0 and name1, and their scores."""
    with h5py.File(path, "r") as f:
        found = find_pair(f, name0, name1)
        if found is None:
            raise DatasetError(f"{path}: no matches for pair ({name0}, {name1})")
        return arrays_to_matches(read_group(f, found[0]), reverse=found[1])


def read_identity(path: str | os.PathLike) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    with h5py.File(path, "r") as f:
        raw = f.attrs.get(IDENTITY_ATTR)
    return json.loads(raw) if raw is not None else None


def check_identity(path: str | os.PathLike, identity: dict) -> None:
    """Refuse to mix results of different configurations in one file."""
    stored = read_identity(path)
    if stored is not None and stored != identity:
        diff = sorted(k for k in set(stored) | set(identity) if stored.get(k) != identity.get(k))
        raise ConfigError(
            f"{path} was made with another configuration (differs in {', '.join(diff)}); "
            "use another output folder or delete the file"
        )


# ---- merging part files into the h5 files ------------------------------------------------------


def merge_parts(
    h5_path: str | os.PathLike, parts: Iterable[str | os.PathLike], identity: dict, leaf: str
) -> int:
    """Copy every record of `parts` not yet in `h5_path` into it, atomically; delete the parts.

    Returns how many groups were added. Records are added in sorted order, so the file does not
    depend on which worker computed what.
    """
    h5_path = Path(h5_path)
    check_identity(h5_path, identity)
    with contextlib.ExitStack() as stack:
        locked = []
        for p in parts:
            lock = records.try_lock(p)
            if lock is None:  # a shard or worker is still writing it: leave it for later
                log.warning("%s is in use by another process; not merged this time", p)
                continue
            stack.enter_context(lock)
            locked.append(Path(p))
        if not locked:
            return 0
        present = list_h5_names(h5_path, leaf)
        todo: dict[str, tuple[Path, int, int]] = {}
        for p in locked:
            index, _ = records.scan(p)
            for name, (off, n) in index.items():
                if name not in present:
                    todo[name] = (p, off, n)
        if todo or not h5_path.exists():
            with atomic_path(h5_path, copy_existing=True) as tmp, h5py.File(tmp, "a") as f:
                f.attrs[IDENTITY_ATTR] = json.dumps(identity, sort_keys=True)
                for name in sorted(todo):
                    p, off, n = todo[name]
                    write_group(f, name, records.read_record(p, off, n), LEAF_FORMAT[leaf])
        for p in locked:
            p.unlink()
    for d in {p.parent for p in locked}:
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty
            d.parent.rmdir()
    return len(todo)


def write_group(f: h5py.File, key: str, arrays: dict[str, np.ndarray], fmt: str) -> None:
    if key in f:
        del f[key]
    datasets = {k: v for k, v in arrays.items() if k not in GROUP_ATTRS}
    attrs = {k: v for k, v in arrays.items() if k in GROUP_ATTRS}
    _write_group(f.create_group(key), datasets, fmt, attrs)


# ---- a read-only view over the merged h5 and the unmerged parts -------------------------------


class FeatureStore:
    """Look up features by image name in `features.h5` and in not-yet-merged part files.

    Keeps a small LRU cache: pairs are sorted so consecutive pairs share their first image.
    """

    def __init__(
        self,
        h5_path: str | os.PathLike,
        part_dir: str | os.PathLike | None = None,
        glob: str = "*.log",
        cache_size: int = 64,
    ):
        self.h5_path = Path(h5_path)
        self.part_dir = Path(part_dir) if part_dir else None
        self.glob = glob
        self.cache: OrderedDict[str, dict] = OrderedDict()
        self.cache_size = cache_size
        self._h5: h5py.File | None = None
        self.refresh()

    def refresh(self) -> None:
        """Re-read which names exist (other processes may have added part files)."""
        self.close()
        self.h5_names = list_h5_names(self.h5_path, "keypoints")
        self.part_index: dict[str, tuple[Path, int, int]] = {}
        if self.part_dir and self.part_dir.exists():
            for p in sorted(self.part_dir.glob(self.glob)):
                index, _ = records.scan(p)
                for name, (off, n) in index.items():
                    self.part_index[name] = (p, off, n)

    def names(self) -> set[str]:
        return self.h5_names | set(self.part_index)

    def __contains__(self, name: str) -> bool:
        return name in self.cache or name in self.h5_names or name in self.part_index

    def arrays(self, name: str) -> dict[str, np.ndarray]:
        if name in self.cache:
            self.cache.move_to_end(name)
            return self.cache[name]
        if name in self.h5_names:
            if self._h5 is None:
                self._h5 = h5py.File(self.h5_path, "r")
            arrays = read_group(self._h5, name)
        elif name in self.part_index:
            arrays = records.read_record(*self.part_index[name])
        else:
            raise KeyError(name)
        self.cache[name] = arrays
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return arrays

    def add(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """Remember features this process computed (and persisted in its own part file)."""
        self.cache[name] = arrays
        self.cache.move_to_end(name)

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
