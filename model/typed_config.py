"""Typed configs: dataclasses validated by OmegaConf, filled from YAML files, dicts and `a.b=value` overrides.

Every component describes its settings as a dataclass with defaults and, where useful, a dict of
named presets. OmegaConf's structured configs check every value against the dataclass's field types
as it is set (an int field refuses 2.5, a list field refuses a bare string, a bool refuses "maybe")
and refuse keys the dataclass does not have; the dataclass's own `__post_init__` then checks what
types cannot say (ranges, combinations). Each value is set on its own, so every refusal names its
key: a mistake in a config file or on the command line is one line that says which key, what it
expects and what it got, never a silent fallback to a default.

One syntax for overrides everywhere: `key.sub=value`, the value parsed like a YAML value by
OmegaConf (`optim.lr=2e-4`, `data.paths=[/a, /b]`, `checkpoint.init_from=null`).
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file, dict or override the schema refuses; the message is one line naming the key."""


def from_dict(cls: type[T], values: dict[str, Any], where: str = "", base: T | None = None) -> T:
    """Build dataclass `cls` from a (nested) dict, merged field by field over `base` (default: cls()).

    where: the key prefix the dict sits at, for messages (e.g. "model.overrides").
    """
    config = _schema(cls, base)
    _merge(config, values, where)
    return _build(config, where)


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as {"dotted.key": leaf value}; an empty dict is a leaf."""
    out = {}
    for key, value in values.items():
        if isinstance(value, dict) and value:
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def parse_override(item: str) -> tuple[str, Any]:
    """`key.sub=value` -> ("key.sub", value), the value parsed by OmegaConf's YAML rules."""
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r} must look like key.sub=value (e.g. optim.lr=1e-4)")
    try:
        parsed = OmegaConf.from_dotlist([f"value={raw}"])
    except (yaml.YAMLError, OmegaConfBaseException) as e:
        raise ConfigError(f"override {item!r}: the value is not valid YAML ({_first_line(e)}); quote text that "
                          "holds brackets, braces, commas or colons, e.g. key=['/a/{0..3}.tar']") from None
    return key, OmegaConf.to_container(parsed, resolve=False)["value"]


def load_config(cls: type[T], path: str | os.PathLike | None = None, overrides: list[str] = (),
                base: T | None = None) -> T:
    """Defaults (or `base`) <- YAML file (merged key by key) <- overrides (each replaces its key), validated."""
    config = _schema(cls, base)
    if path is not None:
        _merge(config, read_yaml(path), "", source=str(path))
    for item in overrides:
        key, value = parse_override(item)
        _set(config, key, value, merge=False)
    return _build(config, "")


def read_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML mapping from a file; a missing, unreadable or malformed file is a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        values = OmegaConf.to_container(OmegaConf.load(path), resolve=False)  # refuses duplicate keys
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or _first_line(e)
        raise ConfigError(f"config file {path} is not valid YAML{at}: {problem}; fix the file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"config file {path} cannot be read ({e})") from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys at the top level, "
                          f"not a {type(values).__name__}")
    return values


def _schema(cls: type, base: Any) -> DictConfig:
    config = OmegaConf.structured(base if base is not None else cls)
    OmegaConf.set_readonly(config, False)  # frozen dataclasses give read-only configs
    return config


def _merge(config: DictConfig, values: Any, where: str, source: str = "") -> None:
    """Set every leaf of the nested dict `values` on `config`: sections merge, values replace."""
    if not isinstance(values, dict):
        raise ConfigError(f"config{' ' + where if where else ''} must be a mapping, got {type(values).__name__}")
    for key, value in flatten(values).items():
        _set(config, key, value, merge=True, where=where, source=source)


def _set(config: DictConfig, key: str, value: Any, merge: bool, where: str = "", source: str = "") -> None:
    try:
        OmegaConf.update(config, key, value, merge=merge)
    except OmegaConfBaseException as e:
        raise ConfigError(_describe(config, key, value, e, where) + (f" (in {source})" if source else "")) from None


def _build(config: DictConfig, where: str) -> Any:
    """The dataclass instance (its `__post_init__` checks run here and raise their own ValueError)."""
    try:
        return OmegaConf.to_object(config)
    except OmegaConfBaseException as e:
        at = f" at {_join(where, e.full_key)}" if getattr(e, "full_key", None) else ""
        raise ConfigError(f"config{at} cannot be built: {_first_line(e)}") from None


def _describe(config: DictConfig, key: str, value: Any, error: OmegaConfBaseException, where: str) -> str:
    """One line naming the offending key and, for a wrong value, the type its field expects."""
    failed = getattr(error, "full_key", None) or key
    parent, _, name = failed.rpartition(".")
    if isinstance(error, (ConfigKeyError, ConfigAttributeError)):
        section = OmegaConf.select(config, parent) if parent else config
        valid = sorted(section.keys()) if isinstance(section, DictConfig) else []
        close = difflib.get_close_matches(name, valid, n=1)
        hint = f" (did you mean {_join(where, _join(parent, close[0]))}?)" if close else ""
        section_name = _join(where, parent) or "the config"
        return f"unknown config key {_join(where, failed)}{hint}; valid keys of {section_name}: {valid}"
    owner = OmegaConf.get_type(OmegaConf.select(config, parent) if parent else config)
    hint = typing.get_type_hints(owner).get(name) if dataclasses.is_dataclass(owner) else None
    if failed != key:  # an intermediate key holds a plain value: `steps.x=1` where steps is a number
        kind = _expected(hint, failed)
        return f"unknown config key {_join(where, key)}: {_join(where, failed)} is {kind}, not a section"
    return f"{_join(where, key)} must be {_expected(hint, _join(where, key), value)}, got {value!r}"


def _expected(hint: Any, key: str, value: Any = None) -> str:
    """A reader's name for a field type: 'an integer', 'a list such as key=[a, b]', ..."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        names = [_expected(a, key, value) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if hint is bool:
        return "true or false"
    if hint is int:
        return "an integer"
    if hint is float:
        return "a number"
    if hint is str:
        return "a string"
    if hint in (tuple, list) or origin in (tuple, list):
        example = value if isinstance(value, (str, int, float)) and not isinstance(value, bool) else "a, b"
        if origin is tuple and len(args) > 1 and args[-1] is not Ellipsis:
            return f"a list of {len(args)} values such as {key}=[{', '.join(['...'] * len(args))}]"
        return f"a list in brackets, such as {key}=[{example}]"
    if hint is dict or origin is dict:
        return f"a mapping in braces, such as {key}={{name: value}}"
    if dataclasses.is_dataclass(hint):
        first = dataclasses.fields(hint)[0].name
        return f"a section (set its keys, such as {key}.{first}=...)"
    return f"a {getattr(hint, '__name__', hint)}"


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where and key else where or key


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
