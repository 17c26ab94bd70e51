"""Which files the page may read: uploads (size-limited) and server paths under named folders only.

The server reads a path typed in the page only if, after resolving every symlink, it lies inside
one of the folders given with `--allow`; `..` components are refused outright, so a typo never
wanders out of the folder even when the target happens to be inside it again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from ..errors import ImageError

MAX_UPLOAD_MB = 50
MIN_SIDE = 32  # smaller images give no useful keypoints; refused with a message


class PathRefused(ImageError):
    """A server path outside the allowed folders, or an upload over the size limit."""


class ServerPaths:
    """The folders named on the command line; `resolve` turns a typed path into a safe file path."""

    def __init__(self, allowed: Iterable[str | os.PathLike] = ()):
        self.allowed = [Path(a).resolve() for a in allowed]
        for a in self.allowed:
            if not a.is_dir():
                raise PathRefused(f"--allow {a}: not a folder")

    def resolve(self, typed: str) -> Path:
        typed = (typed or "").strip()
        if not typed:
            raise PathRefused("no server path given")
        if not self.allowed:
            raise PathRefused(
                f"{typed}: server paths are off (start `tiepoint ui --allow DIR` to read files under DIR)"
            )
        if ".." in Path(typed).parts:
            raise PathRefused(f"{typed}: '..' is not allowed in a server path")
        given = Path(typed).expanduser()
        candidates = [given] if given.is_absolute() else [a / given for a in self.allowed]
        inside = False
        for c in candidates:
            real = c.resolve()  # follows every symlink: a link out of the folders lands outside
            if any(real == a or a in real.parents for a in self.allowed):
                inside = True
                if real.is_file():
                    return real
        folders = ", ".join(map(str, self.allowed))
        if inside:
            raise PathRefused(f"{typed}: no such file under the allowed folders ({folders})")
        # the same answer whether or not the target exists: nothing is learnt about other folders
        raise PathRefused(f"{typed}: outside the allowed folders ({folders})")


def check_upload(path: str | os.PathLike, max_mb: float = MAX_UPLOAD_MB) -> Path:
    """An uploaded file, refused when larger than `max_mb` megabytes."""
    path = Path(path)
    size = path.stat().st_size
    if size > max_mb * 1024 * 1024:
        raise PathRefused(
            f"{path.name}: upload of {size / 2**20:.1f} MB refused (limit {max_mb:g} MB)"
        )
    return path


def check_image(path: Path, name: str) -> tuple[int, int]:
    """(W, H) of a readable image at least MIN_SIDE pixels on each side, else a one-line error."""
    from ..images import read_image

    try:
        _, size = read_image(path, max_size=64)
    except ImageError as e:
        raise ImageError(f"{name}: {str(e).removeprefix(str(path) + ': ')}") from None
    if min(size) < MIN_SIDE:
        raise ImageError(
            f"{name}: image of {size[0]}×{size[1]} pixels is too small "
            f"(at least {MIN_SIDE} pixels on each side)"
        )
    return size
