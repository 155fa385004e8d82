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
from medfound.files import atomic_write

T = TypeVar("T")
CONFIG_NAME = "config.yaml"  # where a run keeps its resolved config
HELP = "help"  # a field's metadata key: the one line the CLI shows for it


def setting(default: Any, help: str) -> Any:
    """A config field with its default and help text (the CLI's options are generated from these).

    A callable default (list, dict) is a factory, as dataclasses need for mutable values.
    """
    if callable(default):
        return dataclasses.field(default_factory=default, metadata={HELP: help})
    return dataclasses.field(default=default, metadata={HELP: help})


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
    if origin is list:
        (item,) = typing.get_args(annotation) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [_check(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
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


def load_config(
    cls: type[T], path: str | Path | None = None, *, base: dict | None = None, **overrides
) -> T:
    """Defaults, then `base` (e.g. a recipe), then the YAML file (if any), then keyword overrides
    (None means 'not given')."""
    data: dict = dict(base or {})
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: cannot read the config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: a config must be a mapping of fields")
        from_dict(cls, loaded, where=str(path))  # the file is checked even where flags override it
        data.update(loaded)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_dict(cls, data, where=str(path) if path else "config")


def save_config(config: Any, path: str | Path) -> None:
    """Write the resolved config as YAML (tuples as lists), atomically."""
    text = yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False)
    atomic_write(Path(path), lambda tmp: tmp.write_text(text))


def _plain(value):
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def resolve_run_config(
    cls: type[T],
    run_dir: str | Path,
    *,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    resume: bool = False,
    may_change: frozenset[str] = frozenset(),
    base: dict | None = None,
) -> T:
    """The config of a run in `run_dir`.

    A new run: defaults, then `base`, then `config_file`, then `overrides` (None values mean 'not
    given'). A resumed run: the config saved in `run_dir/config.yaml`; an override may only change
    the fields in `may_change` (devices, logging, checkpoint cadence), since anything else would
    make the continuation differ from the run that was started. The folder itself is claimed (and checked
    again) by the training loop: engine/run_folder.py.
    """
    saved = Path(run_dir) / CONFIG_NAME
    overrides = overrides or {}
    if not resume:
        if saved.exists():  # said early, before models are loaded; the loop checks again
            raise ConfigError(
                f"{run_dir} already holds a run ({saved.name}); pass --resume to continue it "
                "or choose another --out"
            )
        return load_config(cls, config_file, base=base, **overrides)
    if not saved.exists():
        raise ConfigError(f"--resume: {run_dir} holds no run to continue (no {saved.name})")
    if config_file is not None:
        raise ConfigError(f"--resume continues with {saved}; do not pass --config as well")
    config = load_config(cls, saved, **overrides)
    check_resumable(load_config(cls, saved), config, may_change, saved)
    return config


def check_resumable(original, config, may_change: frozenset[str], where: Path) -> None:
    """Refuse a resumed `config` that differs from the `original` in a field outside `may_change`."""
    changed = [
        f.name
        for f in dataclasses.fields(original)
        if f.name not in may_change and getattr(config, f.name) != getattr(original, f.name)
    ]
    if changed:
        raise ConfigError(
            f"--resume: {', '.join(changed)} differ(s) from the run's {where}; only "
            f"{sorted(may_change)} may change when resuming"
        )
