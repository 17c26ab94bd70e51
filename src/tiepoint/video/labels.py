"""GIM pseudo-labels from video frame pairs (reference-methods §2.1.4–8, §2.2).

A labeler is any tiepoint pipeline (GIM's RootSIFT is `gim-rootsift`). Per pair at one skip:
mask (a callable or a folder of mask images; GIM's ADE20K person/sky/car mask is one such
source), optionally crop both frames to the bounding box of another label set's matches and
rematch at up to 1600×900 (GIM's "resize" runs, crops of its DKM labels), drop static matches
(watermarks, < 1 px in x and y), keep F-MAGSAC inliers at 0.5 px (confidence 0.999999,
1e5 iterations) and store `[x0 y0 x1 y1]` in video pixels.

Layout (GIM's): `OUT/WALK {method} [R] {T|F} [S] {skip:2}/{vid} WH {w:4} {h:4} RG {s:4} {e:4}
SP {skip} {len(vid)}/` with one `[idx0 idx1].npy` (K,4) float32 per labelled pair and
`nums.npy` (P,) / `idxs.npy` (P,2) int64 in pair order. Each file is written atomically after
its pair, so a killed run resumes and ends with the same files as an uninterrupted one.

Deviations, on purpose: the static-point test and the F fit run in stored-frame pixels for
resize runs too (GIM uses the crop's pixels there), and vratio maps pixel centres.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path
from ..errors import VideoError
from ..images import scale_points
from .frames import FrameSet

log = logging.getLogger(__name__)

# GIM's RootSIFT: cv2.SIFT_create(nfeatures=32400, contrastThreshold=1e-5), native resolution,
# mutual NN + ratio 0.8 on √(2−2s); our SIFT's contrastThreshold is detection_threshold × 3
GIM_ROOTSIFT = {
    "preprocessing": {"resize": None},
    "extractor": {
        "name": "sift",
        "max_num_keypoints": 32400,
        "detection_threshold": 1e-5 / 3,
        "rootsift": True,
    },
    "matcher": {"name": "nearest_neighbor", "ratio_thresh": 0.8, "mutual_check": True},
}
LABELERS = {"gim-rootsift": (GIM_ROOTSIFT, "SIFT")}  # name → (pipeline, GIM method name)
RESIZE_BOX = (1600, 900)  # GIM's crop target (W, H) for every method but SIFT
MASK_MODES = ("auto", "keypoints", "image")

MaskSource = Callable[[int, np.ndarray], np.ndarray] | str | Path | None


def label_filename(idx0: int, idx1: int) -> str:
    """GIM's file name: the str of the int array, e.g. '[ 5 15].npy' (numpy pads the columns)."""
    return f"{np.array([idx0, idx1], np.int64)}.npy"


def label_dir(out, fs: FrameSet, method: str, skip: int, resize: bool) -> Path:
    w, h = fs.video_size
    vid = fs.video_id
    run = f"WALK {method} [R] {'T' if resize else 'F'} [S] {skip:2}"
    scene = f"{vid} WH {w:4} {h:4} RG {fs.range[0]:4} {fs.range[1]:4} SP {skip} {len(vid)}"
    return Path(out) / run / scene


def read_labels(folder: str | Path) -> dict[tuple[int, int], np.ndarray]:
    """All pairs of one label set, in `idxs.npy` order."""
    folder = Path(folder)
    if not (folder / "idxs.npy").is_file():
        raise VideoError(f"{folder}: not a label set (no idxs.npy)")
    idxs = np.load(folder / "idxs.npy").reshape(-1, 2)
    return {(int(a), int(b)): np.load(folder / label_filename(a, b)) for a, b in idxs}


def read_mask(source: MaskSource, frame: int, rgb: np.ndarray) -> np.ndarray | None:
    """Where labels may lie (bool H×W at the frame's size), from a callable (frame index, RGB)
    or a folder holding `<frame>.png|.jpg|.npy` (non-zero = keep); None: no mask."""
    if source is None:
        return None
    h, w = rgb.shape[:2]
    where = f"mask of frame {frame}"
    if callable(source):
        m = np.asarray(source(frame, rgb))
    else:
        folder = Path(source)
        files = [folder / f"{frame}.{e}" for e in ("png", "jpg", "npy")]
        f = next((p for p in files if p.is_file()), None)
        if f is None:
            raise VideoError(f"{folder}: no mask for frame {frame} ({frame}.png, .jpg or .npy)")
        m = np.load(f) if f.suffix == ".npy" else cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        if m is None:
            raise VideoError(f"{f}: unreadable mask image")
        where = str(f)
    if m.ndim == 3:
        m = m.any(-1)
    if m.shape != (h, w):
        # a segmenter's lower-resolution output is fine if the aspect ratio is the frame's
        if m.ndim != 2 or abs(m.shape[1] / m.shape[0] - w / h) > 0.02 * w / h:
            raise VideoError(f"{where}: mask of size {m.shape[::-1]} does not fit a {w}×{h} frame")
        m = cv2.resize(m.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    return m.astype(bool)


def _subset(features, keep: np.ndarray):
    from ..types import Features

    return Features(
        features.keypoints[keep],
        features.keypoint_scores[keep],
        features.descriptors[keep],
        features.image_size,
        extra={k: v[keep] for k, v in features.extra.items()},
    )


class Labeler:
    """One matcher (a pipeline name or dict, `gim-rootsift`, or a loaded `tiepoint.Matcher`)
    applied the way GIM's labelling applies it.

    `mask_mode`: `keypoints` drops detections in the masked area (GIM's SIFT detection mask),
    `image` blacks the masked pixels out before matching (GIM's LightGlue and DKM); `auto`
    picks `keypoints` for SIFT pipelines and `image` otherwise.
    """

    def __init__(
        self,
        pipeline="gim-rootsift",
        method: str | None = None,
        mask_mode: str = "auto",
        device=None,
        weights=None,
        overrides=None,
        min_keypoints: int = 8,
    ):
        from ..api import Matcher
        from ..config import lookup

        if isinstance(pipeline, Matcher):  # an already loaded pipeline is used as it is
            self.matcher, name, gim_name = pipeline, pipeline.name, None
        else:
            name = pipeline if isinstance(pipeline, str) else "custom"
            conf, gim_name = LABELERS.get(name, (pipeline, None))
            self.matcher = Matcher(conf, device=device, weights=weights, overrides=overrides)
        self.method = method or gim_name or name
        self.sparse = self.matcher.dense is None
        is_sift = self.sparse and self.matcher.conf.extractor.name == "sift"
        mode = lookup(MASK_MODES, mask_mode, "mask mode", VideoError)
        self.mask_mode = ("keypoints" if is_sift else "image") if mode == "auto" else mode
        if self.mask_mode == "keypoints" and not self.sparse:
            raise VideoError("mask mode 'keypoints' needs a sparse pipeline (dense: use 'image')")
        self.resize_box = None if is_sift else RESIZE_BOX  # GIM: SIFT crops go to frame size
        self.min_keypoints = min_keypoints
        self.cache_size = 8  # frames shared by consecutive pairs: skip/gap + 1 ≤ 5
        self._cache: OrderedDict = OrderedDict()

    def _extract(self, rgb, mask, key):
        if key is not None and key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        f = self.matcher.extract(rgb)
        if self.mask_mode == "keypoints" and mask is not None:
            xy = np.round(f.keypoints).astype(int)
            xy = np.clip(xy, 0, [rgb.shape[1] - 1, rgb.shape[0] - 1])
            f = _subset(f, mask[xy[:, 1], xy[:, 0]])
        if key is not None:
            self._cache[key] = f
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return f

    def match(self, rgb0, rgb1, mask0=None, mask1=None, keys=None) -> tuple[np.ndarray, np.ndarray]:
        """Matched points (K,2), (K,2) in the given images' pixels. `keys` name the two images
        so that a sparse pipeline extracts each video frame once over consecutive pairs."""
        if self.mask_mode == "image":
            rgb0 = rgb0 if mask0 is None else rgb0 * mask0[..., None].astype(rgb0.dtype)
            rgb1 = rgb1 if mask1 is None else rgb1 * mask1[..., None].astype(rgb1.dtype)
        if not self.sparse:
            r = self.matcher.match(rgb0, rgb1)
            return r.points0.astype(np.float64), r.points1.astype(np.float64)
        feats = []
        keys = keys or (None, None)
        for rgb, mask, key in ((rgb0, mask0, keys[0]), (rgb1, mask1, keys[1])):
            f = self._extract(rgb, mask, key)
            if len(f) < self.min_keypoints:
                return np.zeros((0, 2)), np.zeros((0, 2))
            feats.append(f)
        r = self.matcher.match_features(*feats)
        return r.points0.astype(np.float64), r.points1.astype(np.float64)


def _fit_wh(w: int, h: int, box: tuple[int, int]) -> tuple[int, int]:
    """GIM's get_resized_wh then get_divisible_wh(8): fit into box, floor to multiples of 8."""
    s = min(box[1] / h, box[0] / w)
    nw, nh = int(round(w * s)), int(round(h * s))
    return max(nw // 8, 1) * 8, max(nh // 8, 1) * 8


def _crop(rgb, mask, pts, box):
    """Crop to the points' bounding box and resize into `box`; returns the map back."""
    x0, y0 = (math.floor(v) for v in pts.min(0))
    x1, y1 = (math.ceil(v) for v in pts.max(0))
    x0, y0 = max(x0, 0), max(y0, 0)
    crop = rgb[y0:y1, x0:x1]
    h, w = crop.shape[:2]
    if w < 8 or h < 8:
        return None
    nw, nh = _fit_wh(w, h, box)
    crop = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    if mask is not None:
        mask = (
            cv2.resize(
                mask[y0:y1, x0:x1].astype(np.uint8), (nw, nh), interpolation=cv2.INTER_NEAREST
            )
            > 0
        )
    # GIM maps back with x·w/nw + x0 (corner scaling), kept as is
    back = lambda p: p * [w / nw, h / nh] + [x0, y0]
    return crop, mask, back


def filter_labels(
    p0: np.ndarray,
    p1: np.ndarray,
    static_px: float = 1.0,
    threshold: float = 0.5,
    confidence: float = 0.999999,
    max_iters: int = 100000,
) -> np.ndarray:
    """Indices of the matches GIM keeps: moved ≥ `static_px` in x or y (watermarks and other
    static overlays do not), and inliers of an F-MAGSAC fit at `threshold` pixels."""
    from ..estimators import estimate_fundamental

    moved = np.flatnonzero(~(np.abs(p0 - p1) < static_px).all(1))
    if len(moved) < 8:
        return np.zeros(0, np.int64)
    est = estimate_fundamental(
        p0[moved],
        p1[moved],
        "opencv",
        threshold,
        method="usac_magsac",
        confidence=confidence,
        max_iters=max_iters,
    )
    return moved[est.inliers] if est.success else np.zeros(0, np.int64)


def label_pair(
    labeler: Labeler,
    fs: FrameSet,
    idx0: int,
    idx1: int,
    masks: MaskSource = None,
    crop_from: np.ndarray | None = None,
    **filter_options,
) -> np.ndarray | None:
    """(K,4) float32 labels in video pixels for one pair, or None when GIM skips the pair
    (an empty mask, too few keypoints, no F). `crop_from`: (K,4) labels in video pixels whose
    bounding boxes define the resize run's crops."""
    rgb0, rgb1 = fs.read(idx0), fs.read(idx1)
    m0, m1 = read_mask(masks, idx0, rgb0), read_mask(masks, idx1, rgb1)
    if (m0 is not None and not m0.any()) or (m1 is not None and not m1.any()):
        log.info(f"{fs.video_id} {idx0}-{idx1}: empty mask, pair skipped")
        return None
    to_frame = lambda p: scale_points(p, 1.0 / fs.vratio)
    back0 = back1 = lambda p: p
    if crop_from is not None:
        box = labeler.resize_box or tuple(fs.frame_size)
        c0 = _crop(rgb0, m0, to_frame(crop_from[:, :2]), box)
        c1 = _crop(rgb1, m1, to_frame(crop_from[:, 2:4]), box)
        if c0 is None or c1 is None:
            return None
        (rgb0, m0, back0), (rgb1, m1, back1) = c0, c1
    tag = (fs.folder, str(masks) if isinstance(masks, (str, Path)) else id(masks))
    keys = None if crop_from is not None else ((*tag, idx0), (*tag, idx1))
    p0, p1 = labeler.match(rgb0, rgb1, m0, m1, keys)
    p0, p1 = back0(p0), back1(p1)
    keep = filter_labels(p0, p1, **filter_options)
    if not len(keep):
        return None
    v0, v1 = scale_points(p0[keep], fs.vratio), scale_points(p1[keep], fs.vratio)
    return np.concatenate([v0, v1], 1).astype(np.float32)


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, array)


def label_set(
    labeler: Labeler,
    fs: FrameSet,
    out: str | Path,
    skip: int,
    resize: bool = False,
    masks: MaskSource = None,
    crop_method: str = "GIM_DKM",
    progress: bool = True,
    **filter_options,
) -> Path:
    """Label every pair of `fs` at `skip` frames into GIM's layout (resumable); the folder.

    A resize run crops to the non-resized labels of `crop_method` at the same skip, which must
    exist (GIM runs its DKM labels first); a pair without them is skipped, as in GIM.
    """
    from tqdm import tqdm

    pairs = fs.pairs(skip)
    if not pairs:
        raise VideoError(
            f"{fs.folder}: too short for skip {skip}: {len(fs.listing)} sampled frames, "
            f"{skip // fs.gap + 1} needed"
        )
    folder = label_dir(out, fs, labeler.method, skip, resize)
    crops = None
    if resize:
        src = label_dir(out, fs, crop_method, skip, False)
        if not (src / "idxs.npy").is_file():
            raise VideoError(
                f"{src}: a resize run needs the {crop_method} labels at skip {skip} "
                "without resize first"
            )
        crops = read_labels(src)
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in folder.glob(".*.npy"):  # a write cut by SIGKILL; GIM counts the folder's files
        tmp.unlink()
    labeler._cache.clear()  # features of another run (other masks, other frames) never leak in
    nums, idxs = [], []
    bar = tqdm(
        pairs,
        desc=f"{labeler.method} {skip}{'*' if resize else ''}",
        leave=False,
        disable=not progress,
    )
    for i0, i1 in bar:
        path = folder / label_filename(i0, i1)
        if path.is_file():  # done before a kill
            k = len(np.load(path, mmap_mode="r"))
        else:
            crop = None
            if crops is not None:
                crop = crops.get((i0, i1))
                if crop is None or len(crop) < 2:
                    continue
            labels = label_pair(labeler, fs, i0, i1, masks, crop, **filter_options)
            if labels is None:
                continue
            _save_npy(path, labels)
            k = len(labels)
        nums.append(k)
        idxs.append((i0, i1))
        _save_npy(folder / "nums.npy", np.array(nums, np.int64))
        _save_npy(folder / "idxs.npy", np.array(idxs, np.int64).reshape(-1, 2))
    # also when nothing was new (or nothing was labelled): the index matches the files
    _save_npy(folder / "nums.npy", np.array(nums, np.int64))
    _save_npy(folder / "idxs.npy", np.array(idxs, np.int64).reshape(-1, 2))
    if not idxs:
        log.warning(f"{folder}: no pair of {len(pairs)} got labels")
    return folder


def usable_skips(fs: FrameSet, skips: Iterable[int]) -> list[int]:
    """The frame skips of GIM's skip indices `skips` (0, 1, 2 → fs.skips) that fit the sampled
    video; a longer one is logged and left out."""
    out = []
    for s in skips:
        skip = fs.skips[s]
        if fs.pairs(skip):
            out.append(skip)
        else:
            log.warning(f"{fs.folder}: skip {skip} is longer than the sampled video, skipped")
    return out


def label_video(
    labeler: Labeler,
    fs: FrameSet,
    out: str | Path,
    skips=(0, 1, 2),
    resize=(False,),
    masks: MaskSource = None,
    crop_method: str = "GIM_DKM",
    progress: bool = True,
    **filter_options,
) -> list[Path]:
    """GIM's runs for one labeler: every skip index (0, 1, 2 → fs.skips) × resize choice. A skip
    longer than the sampled video is logged and skipped; none at all is an error."""
    done = []
    for r in resize:
        for skip in usable_skips(fs, skips):
            done.append(
                label_set(labeler, fs, out, skip, r, masks, crop_method, progress, **filter_options)
            )
    if not done:
        raise VideoError(
            f"{fs.folder}: too short for every requested skip {[fs.skips[s] for s in skips]}"
        )
    return done
