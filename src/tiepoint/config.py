"""Configs: OmegaConf merges of a model's defaults, packaged YAML presets and dotted overrides.

Unknown keys are errors that name the closest valid key, so a typo never silently does nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import ConfigError

CONFIG_ROOT = resources.files("tiepoint") / "configs"


def _all_keys(conf: DictConfig, prefix: str = "") -> list[str]:
    keys = []
    for k, v in conf.items():
        full = f"{prefix}{k}"
        keys.append(full)
        if isinstance(v, DictConfig):
            keys.extend(_all_keys(v, full + "."))
    return keys


def closest_key(key: str, conf: DictConfig) -> str | None:
    match = difflib.get_close_matches(key, _all_keys(conf), n=1, cutoff=0.5)
    return match[0] if match else None


def merge_strict(
    default: DictConfig | dict, *overrides: DictConfig | dict | None, where: str = ""
) -> DictConfig:
    """Merge `overrides` into `default`, refusing keys that `default` does not have.

    Sub-dicts whose default is an empty dict (or None) are open: anything may go there.
    """
    base = default if isinstance(default, DictConfig) else OmegaConf.create(default)
    base = OmegaConf.merge(base)  # copy
    OmegaConf.set_struct(base, True)
    for ov in overrides:
        if ov is None:
            continue
        ov = ov if isinstance(ov, DictConfig) else OmegaConf.create(ov)
        try:
            base = OmegaConf.merge(base, ov)
        except (ConfigKeyError, OmegaConfBaseException) as e:
            key = getattr(e, "full_key", None) or str(e).split("\n")[0]
            hint = closest_key(str(key), base) if key else None
            msg = f"unknown config key '{key}'" + (f" in {where}" if where else "")
            if hint:
                msg += f" (did you mean '{hint}'?)"
            raise ConfigError(msg) from None
    return base


def class_default_conf(cls: type) -> DictConfig:
    """`base_default_conf` and `default_conf` of a class and all its parents, parents first."""
    conf = OmegaConf.create({})
    for klass in reversed(cls.__mro__):
        for attr in ("base_default_conf", "default_conf"):
            d = klass.__dict__.get(attr)
            if d:
                conf = OmegaConf.merge(conf, d)
    return conf


def parse_dotlist(items: Iterable[str] | None) -> DictConfig:
    """`["matcher.filter_threshold=0.2", ...]` → nested config (values parsed as YAML)."""
    items = list(items or [])
    for it in items:
        if "=" not in it:
            raise ConfigError(f"override '{it}' must look like key=value")
    try:
        return OmegaConf.from_dotlist(items)
    except OmegaConfBaseException as e:
        raise ConfigError(f"cannot parse overrides {items}: {str(e).splitlines()[0]}") from None


def packaged_names(kind: str) -> list[str]:
    folder = CONFIG_ROOT / kind
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_preset(kind: str, name: str) -> DictConfig:
    """Load `configs/<kind>/<name>.yaml` shipped in the package, or a YAML path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.exists():
        return OmegaConf.load(path)
    res = CONFIG_ROOT / kind / f"{name}.yaml"
    if not res.is_file():
        valid = packaged_names(kind)
        near = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConfigError(
            f"unknown {kind[:-1] if kind.endswith('s') else kind} '{name}'{hint}; valid: {', '.join(valid)}"
        )
    return OmegaConf.create(res.read_text())


def to_container(conf: Any) -> Any:
    return OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else conf
