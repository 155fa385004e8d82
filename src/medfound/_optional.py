"""Lazy imports of optional dependencies with a message that says what to install (as MONAI does)."""

import importlib
from types import ModuleType

from medfound.errors import MissingDependencyError


def require(module: str, extra: str | None = None, purpose: str = "") -> ModuleType:
    """Import `module` or raise MissingDependencyError naming the package or medfound extra."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'medfound[{extra}]'" if extra else f"pip install {module}"
        why = f" for {purpose}" if purpose else ""
        raise MissingDependencyError(f"'{module}' is needed{why}: {hint}") from exc
