"""Read medical images into arrays plus metadata, and turn them into model input (presets)."""

from medfound.io.image import MedicalImage
from medfound.io.presets import PRESETS, Preset, Resize, get_preset, preprocess
from medfound.io.readers import SUPPORTED_SUFFIXES, is_supported, read_image

__all__ = [
    "PRESETS",
    "SUPPORTED_SUFFIXES",
    "MedicalImage",
    "Preset",
    "Resize",
    "get_preset",
    "is_supported",
    "preprocess",
    "read_image",
]
