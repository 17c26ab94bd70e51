"""GIM's propagation of short-baseline video labels to wide baselines (`GIM:datasets/walk/walk.py`).

Input: label sets in GIM's layout (reference-methods §2.2), one folder per method/resize/skip:
    PSEUDO/'WALK {METHOD} [R] {T|F} [S] {s:2}'/'{vid} WH {w:4} {h:4} RG {a:4} {b:4} SP {skip} {len}'/
        '[idx0 idx1].npy'  (K, 4) float32 [x0, y0, x1, y1] in original-frame pixels
        nums.npy (P,) label counts, idxs.npy (P, 2) frame-index pairs
Output: OUT/'{methods} {skips} {resizes} FM {fm} PM {pm}'/<vid>/{idx0}_{idx1}.npy, named by the
target pair, row 0 = [i0, i1, i0, i1] of the pair actually reached, then the (K, 4) labels; targets
that fail go to `bad_pairs.txt` in the same folder.

Steps, as GIM runs them: seed frames are the largest-skip pairs with more than `min_filter_matches`
labels in every set of that skip, whose next hop is also a seed and whose first largest-skip hop is
covered by every smaller skip; each seed targets `min(idx0 + step * S, last seed end)`. A chain
walks hops of the largest skip; each hop's labels are all sets' labels at that skip plus the labels
propagated recursively over the hop with the smaller skips; consecutive hops are linked by the
rounded middle-frame position (`link`) while ≥ `min_final_matches` survive, and a failed link
retries the hop shortened by the smallest skip, then stops. A one-hop result is re-propagated with
the smaller skips; the result is filtered by F-MAGSAC at 1 px and kept with ≥ `min_inliers` inliers
and a span above the smallest skip.

Deliberate deviations (documented in docs/video.md): any subset of label sets is accepted (GIM
exits unless there are exactly 24) and the sets used are logged; a hop without labels ends the
chain (GIM would link the next hop's labels across the gap, which pairs points of different
frames); a chain that never starts is a bad pair (GIM raises a TypeError); the run resumes after a
kill (done targets are skipped; bad_pairs.txt is rewritten atomically, in target order).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from functools import reduce
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..errors import DatasetError

log = logging.getLogger(__name__)

GIM_METHODS = ("SIFT", "GIM_DKM", "GIM_GLUE", "GIM_LOFTR")
GIM_SKIPS = (10, 20, 40, 80)
# `GIM:datasets/walk/__init__.py` PSEUDO_LABELS, in GIM's order (the concatenation order matters:
# `link` keeps the last label at a rounded position)
GIM_LABEL_SETS = tuple(
    f"WALK {m} [R] {r} [S] {s:2}" for m in GIM_METHODS for r in ("F", "T") for s in GIM_SKIPS
)
GIM_REQUIRED_SETS = 24  # per video: 4 methods x 2 resize x 3 skips

SET_RE = re.compile(r"^WALK (\S+) \[R\] ([TF]) \[S\]\s*(\d+)$")
VIDEO_RE = re.compile(r"^(.*) WH\s+(\d+)\s+(\d+) RG\s+(-?\d+)\s+(-?\d+) SP (\d+) (\d+)$")


@dataclass
class PropagateConf:
    step: int = 1000  # target = idx0 + step * largest skip (≤ 0: the seed pair itself)
    min_filter_matches: int = 32  # a seed needs more labels than this in every largest-skip set
    min_final_matches: int = 512  # a link needs at least this many matches
    min_inliers: int = 64  # after the final F-MAGSAC
    fm_threshold: float = 1.0
    fm_confidence: float = 0.999999
    fm_max_iters: int = 1000
    max_samples: int = -1  # > 0: GIM's seeded subsample of the targets
    label_sets: tuple[str, ...] | None = None  # outer folder names; None: every WALK folder found
    require_gim_sets: bool = False  # GIM's rule: exactly 24 label sets, else refuse


@dataclass
class LabelSet:
    name: str  # outer folder, e.g. 'WALK SIFT [R] F [S] 20'
    method: str
    resize: str  # 'T' or 'F'
    skip: int  # frames between the two images, from the inner folder's 'SP {skip}'
    path: Path  # inner (per-video) folder
    size: tuple[int, int]  # (w, h) from 'WH'
    idxs: np.ndarray = field(repr=False)  # (P, 2) int64
    nums: np.ndarray = field(repr=False)  # (P,) int64


def pair_file(folder: Path, pair) -> Path:
    """GIM's label file name: the str() of an int64 numpy array, e.g. '[ 0 80].npy'."""
    return Path(folder) / f"{np.array([int(pair[0]), int(pair[1])], np.int64)}.npy"


def video_name(inner: str) -> str | None:
    """The video name of an inner folder ('{vid} WH ... SP {skip} {len(vid)}'), as GIM cuts it."""
    try:
        return inner[: int(inner.split()[-1])]
    except (ValueError, IndexError):
        return None


def _load_array(path: Path, what: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DatasetError(f"{path}: {what} not found (label folder incomplete)") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read {what} ({e})") from None


def find_label_sets(pseudo_root, video: str, names=None) -> list[LabelSet]:
    """The label sets of `video` under `pseudo_root`, in `names` order (default: GIM's order, then
    any other WALK folder sorted). Empty sets are logged and skipped."""
    root = Path(pseudo_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: pseudo-label folder not found")
    if names is None:
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and SET_RE.match(p.name))
        names = [n for n in GIM_LABEL_SETS if n in found] + [
            n for n in found if n not in GIM_LABEL_SETS
        ]
    sets = []
    for name in names:
        m = SET_RE.match(name)
        if m is None:
            raise DatasetError(
                f"label set '{name}': not of the form 'WALK METHOD [R] T|F [S] SKIP'"
            )
        outer = root / name
        if not outer.is_dir():
            continue
        inner = [d for d in sorted(outer.iterdir()) if d.is_dir() and video_name(d.name) == video]
        if not inner:
            continue
        vm = VIDEO_RE.match(inner[0].name)
        if vm is None:
            raise DatasetError(
                f"{inner[0]}: folder name is not '{{vid}} WH w h RG a b SP skip len'"
            )
        idxs = _load_array(inner[0] / "idxs.npy", "idxs.npy").astype(np.int64).reshape(-1, 2)
        nums = _load_array(inner[0] / "nums.npy", "nums.npy").astype(np.int64).reshape(-1)
        if len(idxs) != len(nums):
            raise DatasetError(
                f"{inner[0]}: idxs.npy has {len(idxs)} pairs but nums.npy has {len(nums)}"
            )
        if len(idxs) == 0:
            log.warning("label set %s of %s is empty; skipped", name, video)
            continue
        sets.append(
            LabelSet(
                name,
                m.group(1),
                m.group(2),
                int(vm.group(6)),
                inner[0],
                (int(vm.group(2)), int(vm.group(3))),
                idxs,
                nums,
            )
        )
    return sets


def _rows(a: np.ndarray) -> set:
    return set(map(tuple, np.asarray(a, np.int64).reshape(-1, 2).tolist()))


def _intersect(arrays) -> np.ndarray:
    """Rows common to all (P, 2) arrays, sorted (GIM's `intersected` via np.intersect1d)."""
    common = reduce(lambda x, y: x & y, (_rows(a) for a in arrays))
    return np.array(sorted(common), np.int64).reshape(-1, 2)


def seed_pairs(sets: list[LabelSet], conf: PropagateConf) -> np.ndarray:
    """(T, 2) target pairs (idx0, idx1) from the seed frames, sorted."""
    skips = sorted({s.skip for s in sets})
    S = skips[-1]
    by_skip = {k: [s for s in sets if s.skip == k] for k in skips}
    ids1 = _intersect([s.idxs[s.nums > conf.min_filter_matches] for s in by_skip[S]])
    if len(ids1) == 0:
        return ids1
    starts1 = set(ids1[:, 0].tolist())
    keep = np.array([x + S in starts1 for x in ids1[:, 0].tolist()])
    # every smaller skip covers the first largest-skip hop: GIM checks idx0 + m*s for m < S/s
    # (m = 0, 1 at S2 and 0..3 at S1 for its skip ratios 1:2:4)
    for k in skips[:-1]:
        starts = set(_intersect([s.idxs for s in by_skip[k]])[:, 0].tolist())
        for m in range(max(S // k, 1)):
            keep &= np.array([x + m * k in starts for x in ids1[:, 0].tolist()])
    ids = ids1[keep]
    if len(ids) == 0:
        return ids
    if conf.step > 0:
        end = np.clip(ids[:, 0] + conf.step * S, ids[0, 0], ids[-1, 1])
        pairs = np.stack([ids[:, 0], end], 1)
    else:
        pairs = ids
    pairs = pairs[(pairs[:, 1] - pairs[:, 0]) >= S]
    if conf.max_samples > 0 and len(pairs) > conf.max_samples:
        rng = np.random.RandomState(3407)  # GIM: np.random.seed(3407); np.random.randint
        pairs = pairs[sorted(rng.randint(len(pairs), size=conf.max_samples))]
    return np.array(sorted(_rows(pairs)), np.int64).reshape(-1, 2)


def link(label0: np.ndarray, label1: np.ndarray, min_matches: int):
    """Chain (a→b) and (b→c) labels whose rounded b-positions coincide; None if < min_matches.

    GIM hashes round(x) + round(y) * W (W the video width) into dicts, so the last row at a
    position wins, and sorts the kept pairs by their row in `label0`. We key on (round(x),
    round(y)) packed into one int64: the same links for every point inside the frame, and no
    aliasing of x < 0 or x ≥ W onto the neighbouring row.
    """

    def table(pts):
        r = np.round(pts.astype(np.float64)).astype(np.int64)
        keys = r[:, 1] * (1 << 32) + r[:, 0]
        return dict(zip(keys.tolist(), range(len(pts))))

    t0, t1 = table(label0[:, 2:]), table(label1[:, :2])
    keys = t0.keys() & t1.keys()
    if len(keys) < min_matches:
        return None
    ij = np.array([(t0[k], t1[k]) for k in keys], np.int64)
    ij = np.unique(ij, axis=0)
    return np.concatenate([label0[ij[:, 0], :2], label1[ij[:, 1], 2:]], 1)


def fundamental_inliers(p0: np.ndarray, p1: np.ndarray, conf: PropagateConf) -> np.ndarray:
    """GIM's final filter: OpenCV USAC_MAGSAC fundamental matrix through the estimator interface
    (the same cv2 call with the same arguments: identical inliers, tested)."""
    from ..estimators import estimate_fundamental

    est = estimate_fundamental(
        np.asarray(p0, np.float64),
        np.asarray(p1, np.float64),
        "opencv",
        conf.fm_threshold,
        method="usac_magsac",
        confidence=conf.fm_confidence,
        max_iters=conf.fm_max_iters,
    )
    return est.inliers


def list_videos(pseudo_root) -> list[str]:
    """Video names found under a pseudo-label root (inner folders of every WALK set), sorted."""
    root = Path(pseudo_root)
    if not root.is_dir():
        raise DatasetError(f"{root}: pseudo-label folder not found")
    names = set()
    for outer in root.iterdir():
        if outer.is_dir() and SET_RE.match(outer.name):
            for inner in outer.iterdir():
                if inner.is_dir() and VIDEO_RE.match(inner.name) and video_name(inner.name):
                    names.add(video_name(inner.name))
    return sorted(names)


class Propagator:
    """Propagates the labels of one video's label sets (`GIM:WALKDataset.propagate/link/dump`)."""

    def __init__(self, sets: list[LabelSet], conf: PropagateConf | None = None):
        if not sets:
            raise DatasetError("propagation needs at least one non-empty label set")
        self.conf = conf or PropagateConf()
        self.sets = sets
        self.skips = sorted({s.skip for s in sets})
        self.paths = {k: [s.path for s in sets if s.skip == k] for k in self.skips}

    def dump(self, skip: int, pair) -> np.ndarray | None:
        labels = [np.load(p) for d in self.paths[skip] if (p := pair_file(d, pair)).is_file()]
        labels = [x.reshape(-1, 4) for x in labels]
        return np.concatenate(labels, 0).astype(np.float32) if labels else None

    def propagate(self, idx0: int, idx1: int, skips: list[int], trace: list | None = None):
        """(labels, i0, i1) for the longest chain from idx0 toward idx1, or (None, None, None).

        `trace` (top level only) collects one (hop, hop labels, linked labels or None) per hop.
        """
        skip = skips[-1]
        indices = [skip * (i + 1) + idx0 for i in range((idx1 - idx0) // skip)]
        if not indices or idx0 != indices[0]:
            indices = [idx0] + indices
        if idx1 != indices[-1]:
            indices = indices + [idx1]
        hops = list(zip(indices[:-1], indices[1:]))
        labels, ids = [], [idx0]
        while hops:
            pair = hops.pop(0)
            if pair[0] == pair[1]:
                break
            label = []
            if pair[1] - pair[0] == skip:
                direct = self.dump(skip, pair)
                if direct is not None and len(direct):
                    label.append(direct)
            if skips[:-1]:
                sub, i0, i1 = self.propagate(pair[0], pair[1], skips[:-1])
                if (i0, i1) == pair:
                    label.append(sub)
            if not label:
                break  # deviation: GIM would continue and link across the gap
            if trace is not None and not labels:
                n = sum(len(x) for x in label)
                trace.append((pair, n, n))
            labels.append(np.concatenate(label, 0))
            ids.append(pair[1])
            if len(labels) > 1:
                linked = link(labels[0], labels[1], self.conf.min_final_matches)
                if trace is not None:
                    trace.append((pair, len(labels[1]), None if linked is None else len(linked)))
                if linked is not None:
                    labels, ids = [linked], [ids[0], ids[-1]]
                else:
                    labels.pop(-1)
                    ids.pop(-1)
                    hops = [(pair[0], pair[1] - skips[0])]
        if len(labels) == 1 and len(ids) == 2:
            return labels[0], ids[0], ids[1]
        return None, None, None

    def propagate_pair(self, idx0: int, idx1: int, trace: list | None = None):
        """GIM's `__getitem__` for a target: ((labels (K,4), i0, i1), "") or (None, reason)."""
        skips = self.skips
        labels, i0, i1 = self.propagate(idx0, idx1, skips, trace)
        # a one-hop result is re-propagated with the smaller skips (GIM: twice, for 3 skips)
        for k in range(1, len(skips)):
            if labels is not None and i1 - i0 == skips[-k]:
                labels, i0, i1 = self.propagate(i0, i1, skips[:-k])
        if labels is None:
            return None, "no chain"
        inl = fundamental_inliers(labels[:, :2], labels[:, 2:], self.conf)
        labels = labels[inl]
        if len(labels) < self.conf.min_inliers:
            return None, f"{len(labels)} F inliers < {self.conf.min_inliers}"
        if i1 - i0 == skips[0]:
            return None, f"span {i1 - i0} = smallest skip"
        return (labels, i0, i1), ""


def output_folder(out_root, sets: list[LabelSet], conf: PropagateConf, video: str) -> Path:
    """GIM's `propagate/'{methods} {skips} {resizes} FM {fm} PM {pm}'/<vid>` folder."""
    methods = sorted({s.method for s in sets})[::-1]
    skips = sorted({s.skip for s in sets})
    resizes = sorted({s.resize for s in sets})
    pid = " ".join(
        methods
        + list(map(str, skips))
        + resizes
        + [f"FM {conf.min_filter_matches}", f"PM {conf.min_final_matches}"]
    )
    return Path(out_root) / pid / video


def read_bad_pairs(path: Path) -> list[tuple[int, int]]:
    if not path.is_file():
        return []
    out = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        f = line.split()
        if len(f) != 2 or not all(x.lstrip("-").isdigit() for x in f):
            raise DatasetError(f"{path}:{i}: expected 'idx0 idx1', got '{line}'")
        out.append((int(f[0]), int(f[1])))
    return out


def load_propagated(path) -> tuple[np.ndarray, int, int]:
    """(labels (K, 4), i0, i1) of a propagated file (row 0 = [i0, i1, i0, i1])."""
    a = _load_array(Path(path), "propagated labels")
    if a.ndim != 2 or a.shape[1] != 4 or len(a) < 1:
        raise DatasetError(f"{path}: expected a (1+K, 4) array, got shape {a.shape}")
    i0, i1 = a[0, :2].astype(np.int64).tolist()
    return a[1:], i0, i1


def propagate_video(pseudo_root, video: str, out_root, conf: PropagateConf | None = None, **kw):
    """Propagate every target of `video`; resumable (done targets and bad pairs are skipped).

    Returns a summary dict: the folder, the label sets used, and counts of targets, written and
    rejected pairs. `kw` overrides fields of `conf`.
    """
    from tqdm import tqdm

    unknown = [k for k in kw if k not in PropagateConf.__dataclass_fields__]
    if unknown:
        raise DatasetError(f"propagate: unknown option(s) {unknown}")
    conf = dataclasses.replace(conf or PropagateConf(), **kw)
    names = list(conf.label_sets) if conf.label_sets is not None else None
    sets = find_label_sets(pseudo_root, video, names)
    if not sets:
        raise DatasetError(f"{pseudo_root}: no non-empty label set for video '{video}'")
    if conf.require_gim_sets and len(sets) != GIM_REQUIRED_SETS:
        raise DatasetError(
            f"{video}: {len(sets)} label sets, GIM requires {GIM_REQUIRED_SETS} "
            "(set require_gim_sets=False to accept any subset)"
        )
    log.info("%s: propagating with %d label sets: %s", video, len(sets), [s.name for s in sets])
    folder = output_folder(out_root, sets, conf, video)
    folder.mkdir(parents=True, exist_ok=True)
    bad_path = folder / "bad_pairs.txt"
    bad = read_bad_pairs(bad_path)
    done_bad = set(bad)
    targets = seed_pairs(sets, conf)
    if len(targets) == 0:
        log.warning(
            "%s: no seed frames (no pair labelled in every set); nothing to propagate", video
        )
    prop = Propagator(sets, conf)
    written = 0
    for idx0, idx1 in tqdm(targets.tolist(), desc=f"propagate {video}", leave=False):
        path = folder / f"{idx0}_{idx1}.npy"
        if path.is_file() or (idx0, idx1) in done_bad:
            continue
        result, reason = prop.propagate_pair(idx0, idx1)
        if result is None:
            log.debug("%s: target %d_%d rejected: %s", video, idx0, idx1, reason)
            bad.append((idx0, idx1))
            done_bad.add((idx0, idx1))
            atomic_write_text(bad_path, "".join(f"{a} {b}\n" for a, b in bad))
            continue
        labels, i0, i1 = result
        row0 = np.array([[i0, i1, i0, i1]], np.float32)
        with atomic_path(path, suffix=".npy") as tmp:
            np.save(tmp, np.concatenate([row0, labels.astype(np.float32)], 0))
        written += 1
    return {
        "folder": folder,
        "label_sets": [s.name for s in sets],
        "targets": len(targets),
        "written": written,
        "pairs": len(list(folder.glob("*_*.npy"))),
        "bad": len(bad),
    }


def show_chain(
    pseudo_root, video: str, out_png, target=None, frames_dir=None, conf=None, dpi: int = 90
):
    """Draw one target's chain (frames, hops, surviving labels) to `out_png`; returns a summary.

    target: (idx0, idx1), default the first seed target. frames_dir: GIM's frame cache
    (`{idx}.png`); without it the frames are grey placeholders.
    """
    from ..viz.chain import plot_chain

    conf = conf or PropagateConf()
    sets = find_label_sets(pseudo_root, video, conf.label_sets)
    if not sets:
        raise DatasetError(f"{pseudo_root}: no non-empty label set for video '{video}'")
    if target is None:
        targets = seed_pairs(sets, conf)
        if len(targets) == 0:
            raise DatasetError(f"{video}: no seed frames, no chain to show")
        target = targets[0].tolist()
    trace: list = []
    result, reason = Propagator(sets, conf).propagate_pair(int(target[0]), int(target[1]), trace)
    labels, i0, i1 = result if result is not None else (np.zeros((0, 4)), *target)

    def frame(idx):
        if frames_dir is None:
            return None
        img = cv2.imread(str(Path(frames_dir) / f"{idx}.png"), cv2.IMREAD_COLOR)
        return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    title = f"{video}: target {target[0]}_{target[1]}" + (f" rejected ({reason})" if reason else "")
    plot_chain(
        out_png,
        labels,
        i0,
        i1,
        trace,
        frame,
        size=sets[0].size,
        min_links=conf.min_final_matches,
        title=title,
        dpi=dpi,
    )
    return {"path": Path(out_png), "pair": (i0, i1), "labels": len(labels), "hops": trace}
