"""Errors a user can cause. The CLI prints their message without a traceback and exits non-zero."""


class MedfoundError(Exception):
    """Base class: the message says what went wrong and where (file, field, key)."""


class ImageReadError(MedfoundError):
    """One image could not be read or preprocessed; batch jobs report it and go on."""


class WeightsError(MedfoundError):
    """A weight file is missing, unreadable, or does not match the model."""


class ConfigError(MedfoundError):
    """A configuration field or command-line option is unknown or has the wrong value."""


class UnknownModelError(MedfoundError):
    """A model name that the registry, timm and MONAI all do not know."""


class MissingDependencyError(MedfoundError):
    """An optional package that this feature needs is not installed."""


def first_items(items: list[str], limit: int = 8, sep: str = ", ") -> str:
    """The first `limit` items joined, with '(+N more)' when there are more: for error messages."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return sep.join(items[:limit]) + more


def skip_message(source: str, reason: str) -> str:
    """'SOURCE: REASON' for a skipped item, without repeating the source when the reason starts with it."""
    return reason if reason.startswith(source) else f"{source}: {reason}"
