"""Read medical images into arrays plus metadata, and turn them into model input (presets)."""

from medfound.io.image import MedicalImage
from medfound.io.presets import PRESETS, Preset, get_preset, preprocess
from medfound.io.readers import SUPPORTED_SUFFIXES, is_supported, read_image

__all__ = [
    "PRESETS",
    "SUPPORTED_SUFFIXES",
    "MedicalImage",
    "Preset",
    "get_preset",
    "is_supported",
    "preprocess",
    "read_image",
]
