"""Command-line options generated from a typed config: one `--field-name` per dataclass field.

The config (engine/config.py `setting`) is the one place where a field, its default and its help text
are written; the CLI is made from it, so a new field is an option at once and the help's defaults are
the config's. Every generated option defaults to None ("not given"), so the YAML file and the config's
own defaults apply underneath.
"""

import dataclasses
import inspect
import types
import typing
from typing import Any

import typer
from rich.markup import escape

from medfound.engine.config import HELP


def config_parameters(cls: type, short: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """Keyword-only typer parameters, one per field of dataclass `cls`, in declaration order."""
    short = short or {}
    defaults = cls()
    hints = typing.get_type_hints(cls)
    parameters = []
    for field in dataclasses.fields(cls):
        kind = _cli_type(hints[field.name])
        flag = "--" + field.name.replace("_", "-")
        names = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        names += [short[field.name]] if field.name in short else []
        help_text = field.metadata.get(HELP, "")
        shown = _shown(getattr(defaults, field.name))
        option = typer.Option(None, *names, help=escape(f"{help_text} (default: {shown})"))
        parameters.append(
            inspect.Parameter(
                field.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )
    return parameters


def with_parameters(function, parameters: list[inspect.Parameter]):
    """Give `function(**kwargs)` the signature typer reads (its own parameters come first)."""
    own = [p for p in inspect.signature(function).parameters.values() if p.kind != p.VAR_KEYWORD]
    function.__signature__ = inspect.Signature([*own, *parameters])
    function.__annotations__ = {p.name: p.annotation for p in [*own, *parameters]}
    return function


def _cli_type(annotation: Any) -> type:
    """The type typer parses: X for X | None, str for Literal (the config checks the choice)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _cli_type(options[0])
    if origin is typing.Literal:
        return type(typing.get_args(annotation)[0])
    if origin is list:
        return list[typing.get_args(annotation)[0]]
    return annotation


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "none"
    return str(value)
