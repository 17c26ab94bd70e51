"""Mask images for a folder of frames: `tiepoint video masks FRAMES_DIR OUT`.

Each frame `FRAMES_DIR/<name>.<ext>` gives `OUT/<name>.png`, an 8-bit single-channel image of the
frame's size: 255 where the frame is usable, 0 where GIM's segmenter sees an excluded class
(person, sky, car by default). With `--keep-classes` the uint8 ADE20K class map is also kept as
`OUT/classes/<name>.npy` at the inference size (GIM's `segment/<vid>/<frame>.npy` cache), and a
later run with another `--exclude` reuses it instead of segmenting again.

Files are written atomically; a rerun skips frames whose mask exists (resumable after a kill).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..atomic import atomic_path
from ..errors import DatasetError
from ..models.segmentation.ade20k import (
    GIM_EXCLUDE,
    GIM_LONG_SIDE,
    exclusion_mask,
    to_rgb_uint8,
)

logger = logging.getLogger("tiepoint")

FRAME_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def list_frames(frames_dir: str | Path) -> list[Path]:
    frames_dir = Path(frames_dir)
    if not frames_dir.is_dir():
        raise DatasetError(f"{frames_dir}: not a folder of frames")
    frames = sorted(p for p in frames_dir.iterdir() if p.suffix.lower() in FRAME_EXTENSIONS)
    if not frames:
        raise DatasetError(f"{frames_dir}: no frame images ({', '.join(FRAME_EXTENSIONS)})")
    return frames


def _write_png(path: Path, image: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        if not cv2.imwrite(str(tmp), image):
            raise DatasetError(f"{path}: could not write the mask image")


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path, suffix=".tmp.npy") as tmp:
        np.save(tmp, array)


def write_masks(
    frames_dir: str | Path,
    out: str | Path,
    segmenter: Callable | None = None,
    exclude: Iterable[str] = GIM_EXCLUDE,
    keep_classes: bool = False,
    overwrite: bool = False,
) -> list[Path]:
    """Write one mask PNG per frame; returns the mask paths (in frame order).

    `segmenter`: a `Segmenter` (default: the released ADE20K model) or any callable
    image → boolean H×W mask; `keep_classes` needs a `Segmenter` (it stores its class maps).
    """
    frames = list_frames(frames_dir)
    out = Path(out)
    todo = [f for f in frames if overwrite or not (out / f"{f.stem}.png").is_file()]
    if len(todo) < len(frames):
        logger.info(f"masks: {len(frames) - len(todo)} of {len(frames)} frames already done")
    exclude = tuple(exclude)
    if todo and segmenter is None:
        from ..models.segmentation import Segmenter

        segmenter = Segmenter(exclude=exclude)
    for frame in tqdm(todo, desc="masks", unit="frame", disable=not todo):
        rgb = to_rgb_uint8(frame)
        size = (rgb.shape[1], rgb.shape[0])
        if keep_classes:
            cache = out / "classes" / f"{frame.stem}.npy"
            if cache.is_file() and not overwrite:
                class_map = np.load(cache)
            else:
                class_map = segmenter.class_map(rgb)
                _write_npy(cache, class_map)
            mask = exclusion_mask(class_map, exclude, size)
        else:
            mask = np.asarray(segmenter(rgb))
        if mask.shape != rgb.shape[:2]:
            raise DatasetError(
                f"{frame}: the segmenter returned a {mask.shape} mask for a {rgb.shape[:2]} frame"
            )
        _write_png(out / f"{frame.stem}.png", np.where(mask, 255, 0).astype(np.uint8))
    return [out / f"{f.stem}.png" for f in frames]


def _run(args: argparse.Namespace) -> int:
    from ..models.segmentation import SceneParser, Segmenter

    exclude = [c.strip() for c in args.exclude.split(",") if c.strip()]
    list_frames(args.frames_dir)  # a missing or empty folder is named before weights are fetched
    model = SceneParser.from_checkpoints(args.encoder, args.decoder)
    seg = Segmenter(model, exclude=exclude, long_side=args.long_side, device=args.device)
    paths = write_masks(args.frames_dir, args.out, seg, exclude, args.keep_classes, args.overwrite)
    print(f"→ {len(paths)} masks in {args.out}")
    return 0


def register_masks(subparsers) -> argparse.ArgumentParser:
    """Add `masks` to the sub-commands of `tiepoint video` (`subparsers` of the video parser)."""
    from ..models.segmentation.ade20k import DECODER_WEIGHTS, ENCODER_WEIGHTS

    p = subparsers.add_parser(
        "masks",
        help="mask images of frames (GIM's ADE20K segmenter; 255 = usable, 0 = excluded)",
        description=__doc__.split("\n\n")[1],
    )
    p.add_argument("frames_dir", help="folder of frame images")
    p.add_argument("out", help="folder for <frame>.png masks")
    p.add_argument(
        "--exclude",
        default=",".join(GIM_EXCLUDE),
        help="comma-separated ADE20K class names to mask out (default: person,sky,car)",
    )
    p.add_argument(
        "--long-side",
        type=int,
        default=GIM_LONG_SIDE,
        help="segment at most at this long side (GIM: 720)",
    )
    p.add_argument("--encoder", default=ENCODER_WEIGHTS, help="encoder weights: name or file")
    p.add_argument("--decoder", default=DECODER_WEIGHTS, help="decoder weights: name or file")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available)")
    p.add_argument(
        "--keep-classes", action="store_true", help="also keep class maps in OUT/classes/*.npy"
    )
    p.add_argument("--overwrite", action="store_true", help="redo frames whose mask exists")
    p.set_defaults(func=_run)
    return p
