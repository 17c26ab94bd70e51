"""Configs: OmegaConf merges of a model's defaults, packaged YAML presets and dotted overrides.

Unknown keys are errors that name the closest valid key, so a typo never silently does nothing.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from .errors import ConfigError, TiepointError

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


def _open_empty(conf: DictConfig) -> None:
    """Let empty sub-dicts (e.g. `optimizer_options: {}`) take any key, as merge_strict promises."""
    for k in conf:
        v = conf._get_node(k)
        if isinstance(v, DictConfig):
            if len(v) == 0:
                OmegaConf.set_struct(v, False)
            else:
                _open_empty(v)


def merge_strict(
    default: DictConfig | dict, *overrides: DictConfig | dict | None, where: str = ""
) -> DictConfig:
    """Merge `overrides` into `default`, refusing keys that `default` does not have.

    Sub-dicts whose default is an empty dict (or None) are open: anything may go there.
    """
    base = default if isinstance(default, DictConfig) else OmegaConf.create(default)
    base = OmegaConf.merge(base)  # copy
    OmegaConf.set_struct(base, True)
    _open_empty(base)
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


def unknown_name(
    kind: str, name: Any, valid: Iterable[str], error: type[TiepointError] = ConfigError
) -> TiepointError:
    """The one "unknown <kind> 'x' (did you mean 'y'?); valid: ..." error of every name lookup."""
    valid = sorted(str(v) for v in valid)  # e.g. "None" for a schedule that may be null
    near = difflib.get_close_matches(str(name), valid, n=1)
    hint = f" (did you mean '{near[0]}'?)" if near else ""
    return error(f"unknown {kind} '{name}'{hint}; valid: {', '.join(valid)}")


def lookup(
    table: Mapping[str, Any] | Iterable[str],
    name: Any,
    kind: str,
    error: type[TiepointError] = ConfigError,
) -> Any:
    """`table[name]` (or `name` itself when `table` is a plain collection of names), else the one
    "did you mean" error naming the closest valid name."""
    if name not in table:
        raise unknown_name(kind, name, table, error)
    return table[name] if isinstance(table, Mapping) else name


def import_object(target: str) -> Any:
    """`"package.module:Name"` → the object (how registries name classes lazily)."""
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def resolve_class(
    table: Mapping[str, str], name: Any, kind: str, error: type[TiepointError] = ConfigError
) -> type:
    """A registered short name, or a dotted `package.module:Class` of the user's own, → the class."""
    if name not in table and isinstance(name, str) and ":" in name:
        return import_object(name)
    return import_object(lookup(table, name, kind, error))


def conf_diff(a: Any, b: Any, skip: Iterable[str] = (), prefix: str = "") -> list[str]:
    """Every leaf where two nested dicts differ, as "key: a → b" (keys in `skip` ignored at any depth)."""
    skip = frozenset(skip)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        out = []
        for k in sorted(set(a) | set(b), key=str):
            if k not in skip:
                out += conf_diff(a.get(k), b.get(k), skip, f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]}: {a!r} → {b!r}"]


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
        raise unknown_name(kind.removesuffix("s"), name, packaged_names(kind))
    return OmegaConf.create(res.read_text())


def to_container(conf: Any) -> Any:
    return OmegaConf.to_container(conf, resolve=True) if isinstance(conf, DictConfig) else conf
