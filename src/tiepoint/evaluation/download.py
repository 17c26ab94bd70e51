"""Benchmark data: where it lives, how to fetch it, and a clear message when it is not there.

Downloads resume with HTTP Range into `<file>.part`, are checked against the known size and
sha256, and only then renamed into place; archives are extracted into a temporary folder next to
the target and renamed, so an interrupted download or extraction never looks like a dataset.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from ..atomic import atomic_dir, resumable_path
from ..errors import DatasetError

logger = logging.getLogger("tiepoint")

DATA_ENV = "TIEPOINT_DATA"
CHUNK = 1 << 20


def data_root() -> Path:
    """Root of the benchmark datasets: $TIEPOINT_DATA, else ./data (Glue Factory's layout)."""
    return Path(os.environ.get(DATA_ENV, "data"))


@dataclass(frozen=True)
class Resource:
    """One downloadable archive and the folder it must produce under the data root."""

    url: str | None  # None: no public direct link (manual download)
    filename: str
    folder: str  # top-level folder the archive contains / the benchmark expects
    size: int | None = None
    sha256: str | None = None
    instructions: str = ""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _fetch_into(part: Path, url, name, size, sha256, progress, timeout) -> None:
    """Complete and verify `part` (resuming what is there); raises instead of leaving a bad file."""
    have = part.stat().st_size if part.exists() else 0
    if size is not None and have > size:
        part.unlink()
        have = 0
    if size is None or have < size:
        req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                if have and resp.status != 206:  # server ignored the range: start over
                    have = 0
                length = resp.headers.get("Content-Length")
                total = size or ((int(length) + have) if length else None)
                with (
                    open(part, "ab" if have else "wb") as f,
                    tqdm(
                        total=total,
                        initial=have,
                        unit="B",
                        unit_scale=True,
                        disable=not progress,
                        desc=name,
                    ) as bar,
                ):
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        f.write(chunk)
                        bar.update(len(chunk))
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or e
            raise DatasetError(f"could not download {url}: {reason}") from None
    got = part.stat().st_size
    if size is not None and got < size:
        raise DatasetError(f"{url}: got {got} bytes, expected {size}; run again to resume")
    if size is not None and got > size:
        part.unlink()
        raise DatasetError(f"{url}: got {got} bytes, expected {size}; the file was removed")
    if sha256 is not None:
        digest = _sha256(part)
        if digest != sha256:
            part.unlink()
            raise DatasetError(
                f"{url}: sha256 {digest} does not match the expected {sha256}; "
                "the partial file was removed, run again"
            )


def download_file(
    url: str,
    dest: Path,
    size: int | None = None,
    sha256: str | None = None,
    progress: bool = True,
    timeout: float = 60,
) -> Path:
    """Fetch `url` to `dest`, resuming a previous `dest.part`, then verify and rename atomically."""
    dest = Path(dest)
    with resumable_path(dest, ".part") as part:
        _fetch_into(part, url, dest.name, size, sha256, progress, timeout)
    return dest


def extract(archive: Path, into: Path, folder: str) -> Path:
    """Extract `archive` so that `into/folder` appears at once, complete (scratch dir + atomic_dir)."""
    target = into / folder
    scratch = Path(tempfile.mkdtemp(dir=into, prefix=f".{folder}.extract."))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(scratch)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                try:
                    t.extractall(scratch, filter="data")  # refuses absolute paths / links out
                except TypeError:  # Python without extraction filters
                    t.extractall(scratch)
        else:
            raise DatasetError(f"{archive}: neither a zip nor a tar archive")
        # the archive's top-level folder, or all of it when it has none
        src = scratch / folder if (scratch / folder).is_dir() else scratch
        with atomic_dir(target) as tmp:
            tmp.rmdir()
            os.replace(src, tmp)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def where_to_put(resource: Resource, root: Path) -> str:
    how = f"download {resource.url}" if resource.url else resource.instructions
    return f"{how} and extract it so that {root / resource.folder} exists (or set data.root / ${DATA_ENV})"


def fetch_dataset(resource: Resource, root: Path | None = None, progress: bool = True) -> Path:
    """Make `root/resource.folder` exist: download (resumable, verified) and extract."""
    root = Path(root) if root is not None else data_root()
    target = root / resource.folder
    if target.exists():
        return target
    if resource.url is None:
        raise DatasetError(
            f"{resource.folder} cannot be downloaded automatically: {where_to_put(resource, root)}"
        )
    root.mkdir(parents=True, exist_ok=True)
    archive = root / resource.filename
    try:
        if not archive.exists():
            download_file(resource.url, archive, resource.size, resource.sha256, progress)
    except DatasetError as e:
        raise DatasetError(f"{e}. Alternatively, {where_to_put(resource, root)}") from None
    logger.info("extracting %s", archive)
    extract(archive, root, resource.folder)
    archive.unlink()
    return target
