"""Checks shared by the methods' configs: each refuses a bad value with a ConfigError naming the field."""

import dataclasses
import math
from numbers import Real

from medfound.errors import ConfigError


def _is_real(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def check_number(
    name: str, value: object, low: float, high: float, rule: str, open_low: bool = False
) -> None:
    """ConfigError '<name> <rule>, got <value>' unless value is a real number within the bounds."""
    # written so that NaN fails every comparison, and is refused
    ok = _is_real(value) and (value > low if open_low else value >= low) and value <= high
    if not ok:
        raise ConfigError(f"{name} {rule}, got {value!r}")


def check_range(name: str, value: object, high: float = math.inf) -> tuple[float, float]:
    """A (low, high) pair with 0 < low <= high <= `high`, as a tuple of floats; else ConfigError."""
    pair = tuple(value) if isinstance(value, (tuple, list)) else ()
    ok = len(pair) == 2 and all(map(_is_real, pair)) and 0 < pair[0] <= pair[1] <= high
    if not ok:
        bound = f" <= {high:g}" if high < math.inf else ""
        raise ConfigError(
            f"{name} must be a pair (low, high) with 0 < low <= high{bound}, got {value!r}"
        )
    return float(pair[0]), float(pair[1])


def check_probabilities(config) -> None:
    """Every field of dataclass `config` whose name ends in `_p` must be a real number in [0, 1]."""
    for field in dataclasses.fields(config):
        if field.name.endswith("_p"):
            check_number(field.name, getattr(config, field.name), 0.0, 1.0, "must be in [0, 1]")
