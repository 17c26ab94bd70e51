"""Descriptor Reasoning release files: a zip (or its unpacked folder) holding `model_config.yaml`
and one or more training checkpoints `*.pt` — the layout of the 14 official release zips.

`read_release` is the equivalent of the reference `load_reasoning_from_checkpoint`: the config
gives the architecture, the newest `*.pt` (or a named one) the weights, of which the `dino.`,
`extractor.` and `semantic_reconstruction.` entries are dropped (DINOv2 and the base extractor
load from their own official files; the last is a training-only head). `write_release` writes
that layout (tests and the parity benchmark build releases with it).
"""

from __future__ import annotations

import io
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from ...atomic import atomic_path
from ...config import lookup
from ...errors import ConfigError, WeightsError
from ...weights import load_torch
from ..backbones.dinov2 import ARCHS

CONFIG = "model_config.yaml"
DROPPED = ("dino.", "extractor.", "semantic_reconstruction.")
# the reference's `extractor.model_name` → (tiepoint extractor, descriptor dimension)
EXTRACTORS: dict[str, tuple[str, int]] = {
    "xfeat": ("xfeat", 64),
    "superpoint": ("superpoint", 256),
    "aliked-n": ("aliked", 128),
    "aliked-n16": ("aliked", 128),
    "alike-n": ("alike", 128),
    "dedode-B": ("dedode", 256),
    "dedode-G": ("dedode", 256),
}


@dataclass
class Release:
    arch: dict  # the keys of the `reasoning` matcher config that the release fixes
    extractor: str  # the tiepoint extractor it was trained on
    state: dict  # the head's state dict (ReasoningHead layout)
    source: str  # "<zip>:<member>" or the .pt path, for messages


def _pick(names: list[tuple[str, tuple]], wanted: str | None, where: str) -> str:
    """The named checkpoint, else the newest (ties: the later one in the listing)."""
    if not names:
        raise WeightsError(f"{where}: no *.pt checkpoint beside {CONFIG}")
    if wanted is not None:
        hits = [n for n, _ in names if Path(n).name == wanted]
        if not hits:
            raise WeightsError(
                f"{where}: no checkpoint {wanted}; has {sorted(Path(n).name for n, _ in names)}"
            )
        return hits[0]
    return max(enumerate(names), key=lambda it: (it[1][1], it[0]))[1][0]


def _read_zip(path: Path, checkpoint: str | None) -> tuple[str, dict, str]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise WeightsError(
            f"{path}: not a zip file (expected a Descriptor Reasoning release)"
        ) from None
    with zf:
        configs = [n for n in zf.namelist() if Path(n).name == CONFIG]
        if not configs:
            raise WeightsError(f"{path}: no {CONFIG} inside (not a Descriptor Reasoning release)")
        folder = str(Path(configs[0]).parent)
        pts = [
            (i.filename, i.date_time)
            for i in zf.infolist()
            if i.filename.endswith(".pt") and str(Path(i.filename).parent) == folder
        ]
        member = _pick(pts, checkpoint, str(path))
        text = zf.read(configs[0]).decode()
        with tempfile.TemporaryDirectory() as tmp:
            target = Path(tmp) / "checkpoint.pt"
            target.write_bytes(zf.read(member))
            state = load_torch(target, f"Descriptor Reasoning checkpoint {path}:{member}")
    return text, state, f"{path}:{member}"


def _read_dir(path: Path, checkpoint: str | None) -> tuple[str, dict, str]:
    if not (path / CONFIG).is_file():
        raise WeightsError(f"{path}: no {CONFIG} (not a Descriptor Reasoning release folder)")
    pts = [(str(p), p.stat().st_mtime) for p in sorted(path.glob("*.pt"))]
    pt = Path(_pick(pts, checkpoint, str(path)))
    return (path / CONFIG).read_text(), load_torch(pt, "Descriptor Reasoning checkpoint"), str(pt)


def arch_from_config(cfg, where: str) -> tuple[dict, str]:
    """A release's `model_config.yaml` → (matcher architecture keys, tiepoint extractor name)."""
    try:
        r, name = cfg.reasoning, str(cfg.extractor.model_name)
        dino = str(cfg.dino.weights)
        arch = {
            "extractor_dim": int(r.extractor_features_dim),
            "features_dim": int(r.get("features_dim", 256)),
            "layers": int(r.n_attention_layers),
            "heads": int(r.num_heads),
            "semantic_conditioning": bool(cfg.get("semantic_conditioning", False)),
            "interpolation": str(cfg.get("semantic_interpolation_mode", "bicubic")),
            "semantic_backbone": dino,
        }
        semantic_dim = int(r.semantic_features_dim)
    except Exception as e:  # a missing key or a non-number
        raise WeightsError(f"{where}: {CONFIG} lacks a field ({type(e).__name__}: {e})") from None
    extractor, dim = lookup(EXTRACTORS, name, f"Descriptor Reasoning extractor in {where}")
    lookup(ARCHS, dino, f"DINOv2 model in {where}")
    if dim != arch["extractor_dim"] or ARCHS[dino][0] != semantic_dim:
        raise ConfigError(
            f"{where}: {CONFIG} dimensions ({arch['extractor_dim']}, {semantic_dim}) do not fit "
            f"{name} ({dim}) and {dino} ({ARCHS[dino][0]})"
        )
    if (cfg.get("fix_dino_size") or -1) > 0:
        arch["long_side"] = int(cfg.fix_dino_size)
    return arch, extractor


def read_release(path: str | Path, checkpoint: str | None = None) -> Release:
    """A release zip or folder → its architecture, extractor and head weights."""
    path = Path(path)
    if path.is_dir():
        text, state, source = _read_dir(path, checkpoint)
    elif path.is_file():
        text, state, source = _read_zip(path, checkpoint)
    else:
        raise WeightsError(f"{path}: Descriptor Reasoning release does not exist")
    try:
        cfg = OmegaConf.create(text)
    except Exception as e:
        raise WeightsError(f"{path}: unreadable {CONFIG} ({type(e).__name__})") from None
    arch, extractor = arch_from_config(cfg, str(path))
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{source}: not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith(DROPPED)}
    return Release(arch, extractor, state, source)


def write_release(
    path: str | Path, config: dict | None, checkpoints: dict[str, dict], folder: str = "xfeat"
) -> Path:
    """A zip in the release layout: `<folder>/model_config.yaml` (none when `config` is None) and
    `<folder>/<name>` = {"state_dict", "optimizer", "epoch", "iter", "batch"} per checkpoint, dated
    in the given order (the last is the newest, as `read_release` picks it)."""
    import torch

    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w") as zf:
        if config is not None:
            zf.writestr(f"{folder}/{CONFIG}", OmegaConf.to_yaml(OmegaConf.create(config)))
        for n, (name, state) in enumerate(checkpoints.items()):
            buf = io.BytesIO()
            payload = {"state_dict": state, "optimizer": {}, "epoch": n, "iter": 0, "batch": 0}
            torch.save(payload, buf)
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=(2024, 1 + n % 12, 1, 0, 0, 0))
            zf.writestr(info, buf.getvalue())
    return path
