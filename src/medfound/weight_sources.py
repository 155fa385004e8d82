"""Weight sources that must be converted before they can be loaded (e.g. TensorFlow checkpoints).

The packages that know how to convert a kind of source register it here (convert/ does so for
SavedModels and TF checkpoints when `medfound` is imported); `models.load_model` asks here. So models/
never imports convert/, which itself builds on models/.
"""

from collections.abc import Callable
from pathlib import Path

Matcher = Callable[[Path], bool]
Converter = Callable[[Path, str], Path]  # (source, model name) -> a weight file models/ can read

_CONVERTERS: list[tuple[str, Matcher, Converter]] = []


def register_converter(name: str, matches: Matcher, convert: Converter) -> None:
    """Let `load_model` take sources that `matches` accepts, converted by `convert` (once per name)."""
    if any(existing == name for existing, _, _ in _CONVERTERS):
        return
    _CONVERTERS.append((name, matches, convert))


def loadable_weights(path: Path, model_name: str) -> Path:
    """`path` itself, or the converted file when a registered converter takes it."""
    for _, matches, convert in _CONVERTERS:
        if matches(path):
            return convert(path, model_name)
    return path
