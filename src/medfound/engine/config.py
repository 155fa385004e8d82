"""Typed configs: dataclasses with defaults from the papers, loaded from YAML or dicts and validated.

Unknown fields and values of the wrong type are refused with the field's dotted name, so a typo in a
YAML file fails at start-up instead of silently training with a default.
"""

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medfound.errors import ConfigError

T = TypeVar("T")


def _check(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    if annotation is Any:
        return value
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        for option in typing.get_args(annotation):
            try:
                return _check(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a {annotation}")
    if origin is typing.Literal:
        if value not in typing.get_args(annotation):
            raise ConfigError(f"{where}: {value!r} is not one of {typing.get_args(annotation)}")
        return value
    if origin is tuple:
        args = typing.get_args(annotation)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
        return tuple(
            _check(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args, strict=True))
        )
    if annotation is type(None):
        if value is not None:
            raise ConfigError(f"{where}: expected nothing (null), got {value!r}")
        return None
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation in (int, float, str, bool) and (
        not isinstance(value, annotation) or (annotation is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
    return value


def from_dict(cls: type[T], data: dict, where: str = "config") -> T:
    """Build dataclass `cls` from `data`, refusing unknown fields and wrong types by name."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; known: {sorted(names)}")
    values = {key: _check(value, hints[key], f"{where}.{key}") for key, value in data.items()}
    return cls(**values)


def load_config(cls: type[T], path: str | Path | None = None, **overrides) -> T:
    """Defaults, then the YAML file (if any), then keyword overrides (None means 'not given')."""
    data: dict = {}
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of fields")
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, where=str(path) if path else "config")


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (tuples as lists), atomically."""
    from medfound.models.weights import atomic_write

    text = yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
