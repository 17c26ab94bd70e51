"""Video frames the way GIM samples them (reference-methods §2.1.3), cached as images.

GIM drops the first and last 5 minutes of a video (intros, outros), takes every `gap`-th frame
(10 at ≤30 fps, 20 above) and pairs frames `skip` ∈ {10,20,40} (≤30 fps) or {20,40,80} frames
apart. Frame indices here are decoded-frame indices; at integer frame rates they equal GIM's
(which seeks to i/int(fps) seconds), at NTSC rates (29.97) GIM's "index" drifts from the frame.

The cache folder holds `<frame>.png` per sampled frame and `frames.json` (video, fps, sizes,
range, listing, `vratio`). Each frame is written atomically, so a killed extraction resumes
where it stopped; the manifest's settings must match for a rerun into the same folder.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from ..atomic import atomic_path, atomic_write_text
from ..errors import VideoError
from .readers import probe_video, read_frames

log = logging.getLogger(__name__)

TRIM_SECONDS = 300  # GIM: time range [300 s, duration - 300 s]
MANIFEST = "frames.json"
IMAGE_EXTS = ("png", "jpg")


def frame_gap(fps: float) -> int:
    """Frame stride of the sampled listing (GIM: 10 at ≤30 fps, else 20; fps rounded up)."""
    return 10 if math.ceil(fps) <= 30 else 20


def pair_skips(fps: float) -> tuple[int, int, int]:
    """GIM's three pair distances in frames, indexed by its `--skip 0|1|2`."""
    return (10, 20, 40) if math.ceil(fps) <= 30 else (20, 40, 80)


@dataclass
class VideoInfo:
    path: str
    fps: float
    num_frames: int
    width: int  # decoded frame size
    height: int
    reader: str = "opencv"  # the decoder that opened it (readers.READERS)

    @property
    def seconds(self) -> int:
        return int(math.floor(self.num_frames / self.fps))


def probe(path: str | Path, reader: str = "auto") -> VideoInfo:
    """Open a video (OpenCV, or PyAV: see `readers`): fps, frame count, size; one-line errors."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    used, fps, n, frame = probe_video(path, reader)
    if not fps > 0 or not math.isfinite(fps):
        raise VideoError(f"{path}: the video reports no frame rate ({fps})")
    return VideoInfo(str(path), fps, n, int(frame.shape[1]), int(frame.shape[0]), used)


def time_range(
    info: VideoInfo,
    start: float | None = None,
    end: float | None = None,
    trim: float = TRIM_SECONDS,
) -> tuple[int, int]:
    """(start, end) seconds: given ones (end None or -1: to the end), else GIM's trimmed range;
    a video too short to trim is taken whole."""
    seconds = info.seconds
    if start is None and end is None:
        s, e = trim, seconds - trim
        if s >= e:
            log.info(
                f"{info.path}: {seconds} s is too short to drop {trim} s at each end; "
                "using the whole video"
            )
            s, e = 0, seconds
    else:
        s = 0 if start is None else start
        e = seconds if end is None or end == -1 else min(end, seconds)
    s = max(0, s)
    return int(math.floor(s)), int(math.floor(e))


def frame_listing(info: VideoInfo, rng: tuple[int, int], gap: int) -> list[int]:
    """Sampled frame indices: every `gap`-th frame from start·fps to end·fps (GIM's listing)."""
    first = int(round(rng[0] * info.fps))
    # a range that reaches the (floored) end of the video takes its last fraction of a second too
    last = info.num_frames - 1 if rng[1] >= info.seconds else int(round(rng[1] * info.fps))
    return list(range(first, last + 1, gap))


def frame_pairs(listing: list[int], skip: int, gap: int) -> list[tuple[int, int]]:
    """GIM's pairs at one skip: zip(listing[:-skip//gap], listing[skip//gap:])."""
    k = skip // gap
    return list(zip(listing[:-k], listing[k:])) if 0 < k < len(listing) else []


@dataclass
class FrameSet:
    """A folder of cached frames and what GIM needs to know about them."""

    folder: str
    video: str
    video_id: str
    fps: float
    video_size: tuple[int, int]  # (W, H) decoded video frames: the labels' coordinate frame
    frame_size: tuple[int, int]  # (W, H) of the stored images
    range: tuple[int, int]  # seconds
    gap: int
    skips: tuple[int, ...]
    listing: list[int]
    ext: str = "png"
    complete: bool = False
    reader: str = "opencv"  # the decoder the frames came from
    settings: dict = field(default_factory=dict)

    @property
    def vratio(self) -> np.ndarray:
        """Stored-frame pixels → video pixels (GIM scales its labels by this)."""
        return np.array(self.video_size, np.float64) / np.array(self.frame_size, np.float64)

    def path(self, frame: int) -> Path:
        return Path(self.folder) / f"{frame}.{self.ext}"

    def pairs(self, skip: int) -> list[tuple[int, int]]:
        return frame_pairs(self.listing, skip, self.gap)

    def read(self, frame: int) -> np.ndarray:
        """A cached frame as RGB uint8 (H, W, 3)."""
        img = cv2.imread(str(self.path(frame)), cv2.IMREAD_COLOR)
        if img is None:
            raise VideoError(f"{self.path(frame)}: missing or unreadable cached frame")
        return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)

    def save(self) -> None:
        d = asdict(self)
        d.pop("folder")
        atomic_write_text(Path(self.folder) / MANIFEST, json.dumps(d, indent=1) + "\n")

    @classmethod
    def load(cls, folder: str | Path) -> FrameSet:
        folder = Path(folder)
        p = folder / MANIFEST
        if not p.is_file():
            raise VideoError(
                f"{folder}: not a frames folder (no {MANIFEST}; run `tiepoint video frames`)"
            )
        try:
            d = json.loads(p.read_text())
            fs = cls(folder=str(folder), **d)
        except (ValueError, TypeError) as e:
            raise VideoError(f"{p}: corrupt frames manifest ({e})") from None
        fs.video_size, fs.frame_size = tuple(fs.video_size), tuple(fs.frame_size)
        fs.range, fs.skips = tuple(fs.range), tuple(fs.skips)
        if not fs.complete:
            raise VideoError(
                f"{folder}: frame extraction did not finish; rerun `tiepoint video frames`"
            )
        return fs


def _stored_size(w: int, h: int, max_size: int | None) -> tuple[int, int]:
    if not max_size or max(w, h) <= max_size:
        return w, h
    s = max_size / max(w, h)
    return max(1, int(round(w * s))), max(1, int(round(h * s)))


def extract_frames(
    video: str | Path,
    out: str | Path,
    start: float | None = None,
    end: float | None = None,
    trim: float = TRIM_SECONDS,
    max_size: int | None = None,
    ext: str = "png",
    video_id: str | None = None,
    progress: bool = True,
    reader: str = "auto",
) -> FrameSet:
    """Sample and cache the frames of `video` in `out` (resumable). `max_size` caps the stored
    long side; labels are still reported in video pixels through `vratio`. `reader`: auto
    (OpenCV, else PyAV), opencv or pyav."""
    from tqdm import tqdm

    if ext not in IMAGE_EXTS:
        raise VideoError(f"frame image type must be one of {', '.join(IMAGE_EXTS)}, got '{ext}'")
    info = probe(video, reader)
    rng = time_range(info, start, end, trim)
    gap = frame_gap(info.fps)
    listing = frame_listing(info, rng, gap)
    if not listing:
        raise VideoError(
            f"{video}: no frames in the time range {start if start is not None else rng[0]}–"
            f"{end if end is not None else rng[1]} s "
            f"(the video is {info.num_frames / info.fps:.1f} s long)"
        )
    skips = pair_skips(info.fps)
    if not frame_pairs(listing, skips[0], gap):
        raise VideoError(
            f"{video}: too short for GIM's frame skips: {len(listing)} sampled frame(s) in "
            f"{rng[0]}–{rng[1]} s, the smallest skip ({skips[0]} frames) needs "
            f"{skips[0] // gap + 1}"
        )
    out = Path(out)
    settings = {"start": start, "end": end, "trim": trim, "max_size": max_size}
    fs = FrameSet(
        folder=str(out),
        video=str(video),
        video_id=video_id or Path(video).stem,
        fps=info.fps,
        video_size=(info.width, info.height),
        frame_size=_stored_size(info.width, info.height, max_size),
        range=rng,
        gap=gap,
        skips=skips,
        listing=listing,
        ext=ext,
        reader=info.reader,
        settings=settings,
    )
    if (out / MANIFEST).is_file():
        old = json.loads((out / MANIFEST).read_text())
        if old.get("settings") != settings or old.get("video_id") != fs.video_id:
            raise VideoError(
                f"{out}: holds frames extracted with other settings ({old.get('settings')}); "
                "use another folder"
            )
        if old.get("reader", "opencv") != fs.reader:
            raise VideoError(
                f"{out}: holds frames decoded by {old.get('reader', 'opencv')}, not {fs.reader} "
                "(decoders differ slightly); use another folder or --reader"
            )
        if old.get("complete"):
            return FrameSet.load(out)
    out.mkdir(parents=True, exist_ok=True)
    for tmp in out.glob(f".*.{ext}"):  # a frame write cut by SIGKILL
        tmp.unlink()
    fs.save()
    todo = [f for f in listing if not fs.path(f).is_file()]
    if todo:
        lost = _decode(info, fs, todo, progress and tqdm)
        if lost:
            log.warning(
                f"{video}: decoding stopped before frame {lost}, though the container claims "
                f"{info.num_frames} frames; the listing ends there"
            )
            fs.listing = [f for f in listing if f < lost]
            if not fs.pairs(skips[0]):
                raise VideoError(
                    f"{video}: only {len(fs.listing)} frame(s) decode before frame {lost}: too "
                    f"short for GIM's frame skips"
                )
    fs.complete = True
    fs.save()
    return fs


def _write_frame(path: Path, frame: np.ndarray) -> None:
    with atomic_path(path, suffix=path.suffix) as tmp:
        if not cv2.imwrite(str(tmp), frame):
            raise VideoError(f"{path}: could not write the frame image")


def _decode(info: VideoInfo, fs: FrameSet, todo: list[int], tqdm) -> int | None:
    """Write the `todo` frames; the first one the video could not deliver (a truncated file),
    else None."""
    wanted = set(todo)
    bar = tqdm(total=len(todo), desc=f"frames {fs.video_id}", leave=False) if tqdm else None
    try:
        for pos, frame in read_frames(Path(info.path), todo, fs.reader):
            if (frame.shape[1], frame.shape[0]) != fs.frame_size:
                frame = cv2.resize(frame, fs.frame_size, interpolation=cv2.INTER_AREA)
            _write_frame(fs.path(pos), frame)
            wanted.discard(pos)
            if bar:
                bar.update()
    finally:
        if bar:
            bar.close()
    return min(wanted) if wanted else None
