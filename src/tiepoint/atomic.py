"""Atomic file replacement: write beside the target, then `os.replace`, so a crash leaves either
the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


def _umask_mode(base: int) -> int:
    mask = os.umask(0)
    os.umask(mask)
    return base & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, copy_existing: bool = False, suffix: str = ".tmp"):
    """Yield a temporary path in the same folder; on success it replaces `path`.

    With `copy_existing`, the temporary file starts as a copy of `path` (for appends); `suffix`
    ends the temporary name, for writers that choose the format by extension (".tmp.ply").
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        if copy_existing and path.exists():
            shutil.copyfile(path, tmp)
        else:
            tmp.unlink()
        yield tmp
        # mkstemp makes 0600 files: give the result the mode a plain open() would have
        os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else _umask_mode(0o666))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Yield a temporary folder beside `path`; on success it replaces `path` (old one removed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, _umask_mode(0o777))
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def partial_path(path: str | os.PathLike, suffix: str = ".part") -> Path:
    return Path(path).with_name(Path(path).name + suffix)


@contextlib.contextmanager
def resumable_path(path: str | os.PathLike, suffix: str = ".part"):
    """Yield the fixed `<path><suffix>`; on success it replaces `path`, on failure it stays.

    For long writes that resume where they stopped (downloads, caches): the next run finds the
    partial file under the same name, and `path` itself only ever appears complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    part = partial_path(path, suffix)
    yield part
    os.replace(part, path)
