"""Sizes written as text on a command line or in a config: '64,64,32' (or '64x64x32') -> a tuple."""

from medfound.errors import ConfigError


def parse_sizes(text: str, field: str, count: int | None = None, kind: type = int) -> tuple:
    """The comma- (or x-) separated numbers of `text` as `kind`; `count` of them when given.

    Raises ConfigError naming `field` when a part is not a number of `kind` or the count differs.
    """
    try:
        values = tuple(kind(part) for part in str(text).replace("x", ",").split(","))
    except ValueError:
        values = ()
    if not values or (count is not None and len(values) != count):
        wanted = f"{count} comma-separated" if count is not None else "comma-separated"
        raise ConfigError(f"{field} {text!r}: expected {wanted} numbers, e.g. 64,64,32")
    return values
