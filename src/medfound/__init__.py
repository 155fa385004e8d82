"""medfound: medical-imaging foundation models in PyTorch.

Embed images with a foundation model, pretrain your own (contrastive or restorative), transfer it with
few labels, and run or convert the released checkpoints. Every CLI command is also a Python API.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("medfound")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

import medfound.convert  # noqa: F401  (registers the TensorFlow converters; imports nothing heavy)
from medfound.errors import MedfoundError


def load_model(*args, **kwargs):
    """Build a registered model and load its weights; see `medfound.models.load_model`."""
    from medfound.models import load_model as _load_model

    return _load_model(*args, **kwargs)


__all__ = ["MedfoundError", "__version__", "load_model"]
