"""Readers of foreign checkpoints (TensorFlow SavedModels, SimCLR, Genesis) -> medfound weights.

Importing this package registers the TensorFlow converters with `medfound.weight_sources`, so that
`load_model(..., weights=SAVEDMODEL_DIR)` converts (and caches) on first use. The work itself is
imported only when a TensorFlow source is actually given.
"""

from pathlib import Path

from medfound.weight_sources import register_converter


def _is_tensorflow(path: Path) -> bool:
    from medfound.convert.cache import is_tensorflow_checkpoint

    return is_tensorflow_checkpoint(path)


def _convert_tensorflow(path: Path, model: str) -> Path:
    from medfound.convert.cache import converted_weights

    return converted_weights(path, model)


register_converter("tensorflow", _is_tensorflow, _convert_tensorflow)
