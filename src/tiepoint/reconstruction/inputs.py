"""Find the images of a reconstruction: names relative to the image folder, bad files listed.

Names are POSIX paths relative to IMAGES (`sub/a.jpg`), as in hloc and COLMAP, so two files called
`a.jpg` in different subfolders stay distinct. hloc's pair key flattens `/` to `-`, so names that
collide after flattening (`sub/a.jpg` and `sub-a.jpg`) are refused up front.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from ..errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm"}


@dataclass
class ImageSet:
    root: Path
    names: list[str]
    skipped: dict[str, str] = field(default_factory=dict)  # relative path → reason

    def report_skipped(self) -> str:
        return "; ".join(f"{n} ({why})" for n, why in sorted(self.skipped.items()))


def _check_readable(path: Path) -> str | None:
    """Return why `path` is not a usable image, or None. Reads only the header."""
    if path.stat().st_size == 0:
        return "empty file"
    try:
        with Image.open(path) as im:
            w, h = im.size
    except UnidentifiedImageError:
        return "not an image"
    except (OSError, SyntaxError, ValueError) as e:
        return f"unreadable: {str(e).splitlines()[0]}"
    if min(w, h) < 2:
        return f"too small ({w}x{h})"
    return None


def list_images(root: str | os.PathLike, exclude: list[str | os.PathLike] = ()) -> ImageSet:
    """All readable images under `root` (recursive, sorted); everything else goes to `skipped`.

    `exclude` lists folders to ignore, e.g. the output folder when it lies inside `root`.
    """
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: no such folder")
    if not root.is_dir():
        raise DatasetError(f"{root}: is not a folder of images")
    excluded = [Path(e).resolve() for e in exclude]
    names, skipped = [], {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        dirnames[:] = sorted(
            x for x in dirnames if not x.startswith(".") and (d / x).resolve() not in excluded
        )
        for fn in sorted(filenames):
            if fn.startswith("."):
                continue
            path = d / fn
            rel = path.relative_to(root).as_posix()
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                skipped[rel] = "not an image (extension)"
                continue
            why = _check_readable(path)
            if why:
                skipped[rel] = why
            else:
                names.append(rel)
    names.sort()
    flat: dict[str, str] = {}
    for n in names:
        key = n.replace("/", "-")
        if key in flat:
            raise DatasetError(
                f"{root}: images '{flat[key]}' and '{n}' have the same hloc pair key '{key}'; rename one"
            )
        flat[key] = n
    return ImageSet(root, names, skipped)


def require_images(images: ImageSet, minimum: int = 2) -> None:
    if len(images.names) < minimum:
        extra = f"; skipped: {images.report_skipped()}" if images.skipped else ""
        raise DatasetError(
            f"{images.root}: found {len(images.names)} usable image(s), need at least {minimum}{extra}"
        )
