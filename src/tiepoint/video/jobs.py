"""Labelling and propagation on the reconstruction executors (local, Ray actors, `--shard i/N`).

GIM labelled 100 hours of video; the unit of work here is one frame pair (labelling) or one
propagation target. A `VideoWorker` keeps its labeler loaded (a Ray actor loads it once) and
writes each result as its own file in GIM's layout, atomically; the driver then rebuilds each
set's `nums.npy` / `idxs.npy` (and `bad_pairs.txt`) from the files in pair order. So the output
does not depend on which executor ran, how many workers or shards, or in which order: every
shard rewrites the index from all files present, and the last shard to finish leaves it whole
(rerunning any shard, which finds its items done, rewrites it again).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import TiepointError, VideoError
from ..reconstruction.executors import make_executor, shard_slice
from .frames import FrameSet
from .labels import (
    LABELERS,
    Labeler,
    _save_npy,
    label_dir,
    label_filename,
    label_pair,
    usable_skips,
)

log = logging.getLogger(__name__)


@dataclass
class VideoJobSpec:
    """What a worker needs to rebuild its labeler (picklable, for Ray)."""

    out: str
    pipeline: str = "gim-rootsift"
    method: str | None = None
    mask_mode: str = "auto"
    device: str | None = None
    weights: str | None = None
    overrides: list[str] = field(default_factory=list)
    masks: str | None = None  # folder of <frame>.png masks
    crop_method: str = "GIM_DKM"
    threshold: float = 0.5
    pseudo: str | None = None  # propagation: the label root
    propagate: dict = field(default_factory=dict)  # PropagateConf fields
    torch_threads: int | None = None


class VideoWorker:
    """One loaded labeler (created on first use: propagation needs none)."""

    def __init__(self, spec: VideoJobSpec, name: str):
        import torch

        if spec.torch_threads:
            torch.set_num_threads(spec.torch_threads)
        self.spec, self.name = spec, name
        self._labeler: Labeler | None = None
        self._frames: dict[str, FrameSet] = {}
        self._propagators: dict = {}

    @property
    def labeler(self) -> Labeler:
        if self._labeler is None:
            s = self.spec
            self._labeler = Labeler(
                s.pipeline, s.method, s.mask_mode, s.device, s.weights, list(s.overrides) or None
            )
        return self._labeler

    def _fs(self, folder: str) -> FrameSet:
        if folder not in self._frames:
            self._frames[folder] = FrameSet.load(folder)
        return self._frames[folder]

    def label(self, items: list) -> list:
        """items: (frames folder, skip, resize, idx0, idx1); writes '[idx0 idx1].npy' if labelled."""
        out = []
        for item in items:
            folder, skip, resize, i0, i1 = item
            try:
                fs, s = self._fs(folder), self.spec
                path = label_dir(s.out, fs, self.labeler.method, skip, resize) / label_filename(
                    i0, i1
                )
                if not path.is_file():
                    crop = None
                    if resize:
                        src = label_dir(s.out, fs, s.crop_method, skip, False)
                        crop_path = src / label_filename(i0, i1)
                        crop = np.load(crop_path) if crop_path.is_file() else None
                        if crop is None or len(crop) < 2:
                            out.append((item, None))
                            continue
                    labels = label_pair(
                        self.labeler, fs, i0, i1, s.masks, crop, threshold=s.threshold
                    )
                    if labels is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        _save_npy(path, labels)
                out.append((item, None))
            except TiepointError as e:
                out.append((item, str(e)))
        return out

    def propagate(self, items: list) -> list:
        """items: (video, idx0, idx1) targets; writes '{i0}_{i1}.npy' or a '.bad/' marker."""
        from .propagate import (
            PropagateConf,
            Propagator,
            find_label_sets,
            output_folder,
            read_bad_pairs,
        )

        out = []
        for item in items:
            video, i0, i1 = item
            try:
                if video not in self._propagators:
                    conf = PropagateConf(**self.spec.propagate)
                    sets = find_label_sets(self.spec.pseudo, video, conf.label_sets)
                    folder = output_folder(self.spec.out, sets, conf, video)
                    bad = set(read_bad_pairs(folder / "bad_pairs.txt"))
                    self._propagators[video] = (Propagator(sets, conf), folder, bad)
                prop, folder, bad = self._propagators[video]
                path = folder / f"{i0}_{i1}.npy"
                marker = folder / ".bad" / f"{i0}_{i1}"
                if not (path.is_file() or marker.is_file() or (i0, i1) in bad):
                    result, reason = prop.propagate_pair(i0, i1)
                    if result is None:
                        from ..atomic import atomic_write_text

                        marker.parent.mkdir(parents=True, exist_ok=True)
                        atomic_write_text(marker, reason + "\n")
                    else:
                        labels, a, b = result
                        row0 = np.array([[a, b, a, b]], np.float32)
                        _save_npy(path, np.concatenate([row0, labels.astype(np.float32)], 0))
                out.append((item, None))
            except TiepointError as e:
                out.append((item, str(e)))
        return out

    def close(self) -> None:
        """Nothing to release: every result is its own atomically written file."""

    def ping(self) -> bool:
        return True


def write_index(folder: Path, pairs: list[tuple[int, int]]) -> tuple[int, int]:
    """`nums.npy` / `idxs.npy` of a label folder from its pair files, in pair order."""
    nums, idxs = [], []
    for i0, i1 in pairs:
        path = folder / label_filename(i0, i1)
        if path.is_file():
            nums.append(len(np.load(path, mmap_mode="r")))
            idxs.append((i0, i1))
    folder.mkdir(parents=True, exist_ok=True)
    _save_npy(folder / "nums.npy", np.array(nums, np.int64))
    _save_npy(folder / "idxs.npy", np.array(idxs, np.int64).reshape(-1, 2))
    return len(idxs), int(sum(nums))


def _run(spec, method, items, executor, workers, shard, ray_address, desc):
    ex = make_executor(executor, spec, workers, ray_address, shard, worker_cls=VideoWorker)
    try:
        failures = ex.run(method, shard_slice(items, shard), desc)
    finally:
        ex.close()
    for key, err in failures.items():
        log.warning("%s %s: %s", method, key, err)
    return failures


def label_videos(
    frames: list,
    spec: VideoJobSpec,
    skips=(0, 1, 2),
    resize=(False,),
    executor: str = "local",
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    ray_address: str | None = None,
) -> list[Path]:
    """`label_video` for many frame folders on an executor; same files as `label_video`.

    Non-resized runs go first (a resize run of the same method crops to its labels)."""
    sets = {False: [], True: []}
    for folder in frames:
        fs = FrameSet.load(folder)
        for r in resize:
            sets[r] += [(str(folder), fs, skip) for skip in usable_skips(fs, skips)]
    if not sets[False] and not sets[True]:
        raise VideoError(f"{frames}: too short for every requested skip")
    method = spec.method or LABELERS.get(spec.pipeline, (None, spec.pipeline))[1]  # as Labeler
    done = []
    for r in (False, True):
        items = [(f, skip, r, a, b) for f, fs, skip in sets[r] for a, b in fs.pairs(skip)]
        if not items:
            continue
        _run(spec, "label", items, executor, workers, shard, ray_address, "label")
        for _, fs, skip in sets[r]:
            folder = label_dir(spec.out, fs, method, skip, r)
            write_index(folder, fs.pairs(skip))
            done.append(folder)
    return done


def propagate_videos(
    pseudo,
    out,
    videos: list[str],
    conf=None,
    executor: str = "local",
    workers: int | None = None,
    shard: tuple[int, int] | None = None,
    ray_address: str | None = None,
) -> list[dict]:
    """`propagate_video` for many videos on an executor; same files as `propagate_video`."""
    import dataclasses

    from ..atomic import atomic_write_text
    from .propagate import (
        PropagateConf,
        find_label_sets,
        output_folder,
        read_bad_pairs,
        seed_pairs,
    )

    conf = conf or PropagateConf()
    spec = VideoJobSpec(out=str(out), pseudo=str(pseudo), propagate=dataclasses.asdict(conf))
    items, folders = [], {}
    for video in videos:
        sets = find_label_sets(pseudo, video, conf.label_sets)
        if not sets:
            raise VideoError(f"{pseudo}: no non-empty label set for video '{video}'")
        folders[video] = (output_folder(out, sets, conf, video), sets)
        folders[video][0].mkdir(parents=True, exist_ok=True)
        # all targets, done or not: a shard's block must not depend on what others finished
        items += [(video, a, b) for a, b in seed_pairs(sets, conf).tolist()]
    _run(spec, "propagate", items, executor, workers, shard, ray_address, "propagate")
    summaries = []
    for folder, sets in folders.values():
        bad = set(read_bad_pairs(folder / "bad_pairs.txt"))
        bad |= {tuple(map(int, p.name.split("_"))) for p in (folder / ".bad").glob("*_*")}
        bad = sorted(bad)
        if bad or (folder / "bad_pairs.txt").is_file():
            atomic_write_text(folder / "bad_pairs.txt", "".join(f"{a} {b}\n" for a, b in bad))
        summaries.append(
            {
                "folder": folder,
                "label_sets": [s.name for s in sets],
                "pairs": len(list(folder.glob("*_*.npy"))),
                "bad": len(bad),
            }
        )
    return summaries
