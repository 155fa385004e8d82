"""Decide numerically which input range a converted network needs to reproduce its SavedModel.

With TensorFlow installed, the SavedModel is called as REMEDIS documents it (images in [0, 1]) and
compared with the converted network fed [0, 1] mapped to [-1, 1] ("symmetric": the SavedModel scales
inside) and fed [0, 1] as is ("unit": it passes them on). The same run cross-checks the conversion:
if neither matches, the conversion is wrong and nothing is written.
"""

import logging
from pathlib import Path

import numpy as np
import torch

# Importing TensorFlow before torchvision crashes the process (seen here with tensorflow-cpu 2.21 and
# torchvision 0.29: a segfault inside torchvision's import); torchvision first is fine.
import torchvision  # noqa: F401  isort: skip

from medfound.errors import WeightsError
from medfound.models import FoundationModel

log = logging.getLogger(__name__)

# Relative error (max over the mean absolute embedding) under which outputs are the same:
# float32 through 50+ layers differs by about 1e-4 between frameworks.
MATCH_TOLERANCE = 1e-3


def tensorflow_available() -> bool:
    """True when TensorFlow imports (it is optional: `pip install 'medfound[tf]'`)."""
    try:
        import tensorflow  # noqa: F401
    except ImportError:
        return False
    return True


def savedmodel_embedding(src: Path, images_nhwc: np.ndarray) -> np.ndarray:
    """Run the SavedModel on a batch; spatial outputs are averaged over H, W (as REMEDIS users do)."""
    import tensorflow as tf

    loaded = tf.saved_model.load(str(src))
    signatures = getattr(loaded, "signatures", {})
    if "serving_default" in signatures:
        fn = signatures["serving_default"]
        names = list(fn.structured_input_signature[1].keys())
        outputs = fn(**{names[0]: tf.constant(images_nhwc)})
        out = next(iter(outputs.values())).numpy()
    else:
        out = loaded(tf.constant(images_nhwc)).numpy()
    return out.mean(axis=(1, 2)) if out.ndim == 4 else out


def relative_error(ours: np.ndarray, theirs: np.ndarray) -> float:
    """max |ours - theirs| / mean |theirs|."""
    return float(np.abs(ours - theirs).max() / max(np.abs(theirs).mean(), 1e-12))


def detect_input_range(src: Path, model: FoundationModel, size: int = 224) -> tuple[str, float]:
    """The network input range, 'unit' or 'symmetric', and the relative error of the match."""
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    theirs = savedmodel_embedding(src, images)
    batch = torch.from_numpy(images).permute(0, 3, 1, 2)
    errors = {}
    for name, mean in (("symmetric", (0.5,) * 3), ("unit", (0.0,) * 3)):
        model.set_input_contract(mean, tuple(0.5 if m else 1.0 for m in mean))
        ours = model.embed(batch)
        errors[name] = relative_error(ours, theirs) if ours.shape == theirs.shape else float("inf")
    best = min(errors, key=errors.get)
    if errors[best] > MATCH_TOLERANCE:
        raise WeightsError(
            f"{src}: the converted network does not reproduce the SavedModel's output with either "
            f"input range (relative errors {errors}); the conversion is wrong, nothing was written"
        )
    log.info("%s: network input %s (relative error %.1e vs TensorFlow)", src, best, errors[best])
    return best, errors[best]
