"""Typed configs: dataclasses built from dicts and YAML files, with `a.b=value` overrides.

Every component describes its settings as a dataclass with defaults and, where useful, a dict of
named presets. This module turns nested dicts (from YAML, a checkpoint, or the command line) into
those dataclasses, rejecting unknown keys with a message that lists the valid ones, so a typo in a
config never silently falls back to a default.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


def from_dict(cls: type[T], values: dict[str, Any], where: str = "") -> T:
    """Build dataclass `cls` from a (nested) dict, type-checking dataclass fields recursively."""
    if not isinstance(values, dict):
        raise ValueError(f"config{where or ''} must be a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ValueError(f"unknown config key(s) {unknown} in {cls.__name__}{where}; valid keys: {sorted(known)}")
    kwargs = {}
    for name, value in values.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value, f"{where}.{name}")
        kwargs[name] = _coerce(hint, value, f"{cls.__name__}{where}.{name}")
    return cls(**kwargs)


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Convert YAML/CLI scalars to the declared type (YAML reads `2e-4` as a string, lists as lists)."""
    origin = typing.get_origin(hint)
    try:
        if hint is float and isinstance(value, (int, float, str)) and not isinstance(value, bool):
            return float(value)
        if hint is int and isinstance(value, str):
            return int(value)
        if (hint is tuple or origin is tuple) and isinstance(value, list):
            return tuple(value)
    except ValueError:
        raise ValueError(f"config value {where}={value!r} is not a valid {getattr(hint, '__name__', hint)}") from None
    return value


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def apply_overrides(values: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply command-line overrides `key.sub=value` (value parsed as YAML) to a nested dict copy."""
    out = _deep_copy(values)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. optim.lr=1e-4)")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                raise ValueError(f"override {item!r}: {part!r} is not a config section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw)
    return out


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] = (),
                base: T | None = None) -> T:
    """Defaults (or `base`) <- YAML file <- overrides, validated into dataclass `cls`."""
    values = to_dict(base if base is not None else cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        loaded = yaml.safe_load(path.read_text()) or {}
        values = _merge(values, loaded)
    return from_dict(cls, apply_overrides(values, list(overrides)))


def _merge(base: dict, update: dict) -> dict:
    out = _deep_copy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _deep_copy(values: dict) -> dict:
    return {k: _deep_copy(v) if isinstance(v, dict) else v for k, v in values.items()}
