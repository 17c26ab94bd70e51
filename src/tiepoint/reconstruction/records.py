"""Append-only, crash-safe part files: one per worker, merged into the hloc h5 files at the end.

Why not append to an h5 file per item: HDF5 updates its metadata in place, so a process killed
in the middle of a write can leave a file that no longer opens, losing every item in it. A log of
self-checking records cannot be damaged that way: each record is written and flushed in one go,
and a torn tail (the item in flight when the process died) fails its length or CRC check and is
cut off when the owner reopens the file. So a kill loses at most the item in flight.

Record layout: b"TPR1", u32 name length, u64 payload length, u32 CRC32(name + payload),
name (UTF-8), payload (an uncompressed `.npz` of named arrays, loaded without pickle).
Only one process may append to a given part file; an OS lock on a sidecar `<part>.lock` file
(`filelock`: flock on POSIX, msvcrt on Windows) enforces it. The OS drops it when its holder
dies, so a part file of a killed run can be reopened and merged.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from filelock import FileLock, Timeout

from ..errors import DatasetError

MAGIC = b"TPR1"
HEADER = struct.Struct("<4sIQI")


def encode(name: str, arrays: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    payload = buf.getvalue()
    key = name.encode("utf-8")
    crc = zlib.crc32(payload, zlib.crc32(key))
    return HEADER.pack(MAGIC, len(key), len(payload), crc) + key + payload


def _decode_payload(payload: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(payload), allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def scan(path: str | os.PathLike) -> tuple[dict[str, tuple[int, int]], int]:
    """Index a part file: {name: (payload offset, payload length)} and the end of the valid part.

    Stops at the first torn or corrupt record; a later record for the same name wins.
    """
    index: dict[str, tuple[int, int]] = {}
    valid_end = 0
    path = Path(path)
    if not path.exists():
        return index, 0
    size = path.stat().st_size
    with open(path, "rb") as f:
        while True:
            head = f.read(HEADER.size)
            if len(head) < HEADER.size:
                break
            magic, nlen, plen, crc = HEADER.unpack(head)
            start = valid_end + HEADER.size
            if magic != MAGIC or start + nlen + plen > size:
                break
            key = f.read(nlen)
            payload = f.read(plen)
            if zlib.crc32(payload, zlib.crc32(key)) != crc:
                break
            try:
                name = key.decode("utf-8")
            except UnicodeDecodeError:
                break
            index[name] = (start + nlen, plen)
            valid_end = start + nlen + plen
    return index, valid_end


def iter_records(path: str | os.PathLike) -> Iterator[tuple[str, dict[str, np.ndarray]]]:
    index, _ = scan(path)
    with open(path, "rb") as f:
        for name, (off, n) in index.items():
            f.seek(off)
            yield name, _decode_payload(f.read(n))


def read_record(path: str | os.PathLike, offset: int, length: int) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        f.seek(offset)
        return _decode_payload(f.read(length))


def _lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


def _try_acquire(path: Path) -> FileLock | None:
    """Non-blocking: the lock if no other process (or open writer) holds it, else None."""
    lock = FileLock(_lock_path(path), thread_local=False)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        return None
    return lock


def _release(lock: FileLock, path: Path) -> None:
    lock.release()
    if not path.exists():  # the part file was merged and deleted: its lock file goes too
        with contextlib.suppress(OSError):
            _lock_path(path).unlink()


class _Lock:
    def __init__(self, lock: FileLock, path: Path):
        self.lock, self.path = lock, path

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _release(self.lock, self.path)


def try_lock(path: str | os.PathLike) -> _Lock | None:
    """Exclusive lock on a part file if no writer holds it (a context manager), else None."""
    path = Path(path)
    if not path.exists():
        return None
    lock = _try_acquire(path)
    return None if lock is None else _Lock(lock, path)


class PartWriter:
    """The one writer of a part file. Reopening truncates a torn tail left by a killed run."""

    def __init__(self, path: str | os.PathLike, fsync: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self._lock = _try_acquire(self.path)
        if self._lock is None:
            raise DatasetError(
                f"{self.path}: another process is writing this part file (two runs on one output?)"
            )
        self._f = open(self.path, "a+b")  # noqa: SIM115 (closed in close())
        index, valid_end = scan(self.path)
        if valid_end < self.path.stat().st_size:
            self._f.truncate(valid_end)
        self.names = set(index)

    def append(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        self._f.seek(0, os.SEEK_END)
        self._f.write(encode(name, arrays))
        self._f.flush()
        if self.fsync:
            os.fsync(self._f.fileno())
        self.names.add(name)

    def close(self) -> None:
        if not self._f.closed:
            self._f.close()
            _release(self._lock, self.path)

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
