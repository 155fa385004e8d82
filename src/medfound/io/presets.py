"""Per-modality preprocessing presets: MedicalImage -> model input tensor in [0, 1].

A preset fixes how intensities map to [0, 1], whether the image is used in colour or grayscale, the
voxel spacing a volume is resampled to (if any) and the size it is resized to. The model's own input
contract (e.g. BiT's [-1, 1]) is applied later, inside the model wrapper, so every preset output is
in [0, 1].
"""

import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from medfound.errors import ConfigError, ImageReadError
from medfound.io.image import MedicalImage
from medfound.io.resample import resample_to_spacing, resize_volume

log = logging.getLogger(__name__)

Size = int | tuple[int, ...] | None

# ITU-R BT.601 luma weights, as Pillow's "L" conversion uses.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class Preset:
    """How an image becomes model input.

    intensity: "range" maps the image's value range (bit depth or DICOM window; min-max when the file
        gives none) to [0, 1]; "window" clips to `window` (e.g. HU) and scales; "percentile" maps the
        `percentiles` of this scan to [0, 1] (min-max with (0, 100)).
    colour: "gray" uses luminance (repeated to 3 channels for RGB models); "rgb" keeps colour.
    size: side (2D) or shape (3D) to resize to; None means the model's native input size (and its
        card's resize recipe, `Resize`).
    fit: "stretch" resizes to the size, "crop" resizes the short side and centre-crops (2D only);
        None means the model's recipe (stretch for models without one).
    spacing: voxel spacing in mm (X, Y, Z) to resample a volume to before the final resize; None means
        the model card's `input_spacing`, if it has one. Volumes whose spacing is unknown are not
        resampled. Every shrinking resize is anti-aliased.
    """

    name: str
    intensity: Literal["range", "window", "percentile"] = "range"
    window: tuple[float, float] = (-1000.0, 1000.0)
    percentiles: tuple[float, float] = (0.5, 99.5)
    colour: Literal["gray", "rgb"] = "gray"
    size: Size = None
    fit: Literal["stretch", "crop"] | None = None
    spacing: tuple[float, float, float] | None = None

    def to_json(self) -> str:
        """The resolved preset, recorded beside every output."""
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


PRESETS: dict[str, Preset] = {
    # Sizes come from the model's card (REMEDIS: 448 for chest X-rays, 224 for pathology).
    "cxr": Preset("cxr", intensity="range", colour="gray"),
    "path": Preset("path", intensity="range", colour="rgb"),
    "ct": Preset("ct", intensity="window", window=(-1000.0, 1000.0), colour="gray"),
    "mri": Preset("mri", intensity="percentile", percentiles=(0.5, 99.5), colour="gray"),
}
_CHOICES = {
    "intensity": ("range", "window", "percentile"),
    "colour": ("gray", "rgb"),
    "fit": ("stretch", "crop"),
}


@dataclass(frozen=True)
class Resize:
    """A model's published resize recipe (2D): how an image of any shape becomes its input.

    fit: "stretch" resizes both sides to the input size (e.g. Hugging Face's ViTImageProcessor);
        "crop" resizes the short side to floor(size / crop_pct) keeping the aspect ratio, then
        centre-crops the size (torchvision's Resize + CenterCrop; timm's eval transform and its
        `crop_pct`): Resize(256) + CenterCrop(224) is crop_pct 0.875.
    interpolation: "bilinear" or "bicubic", anti-aliased when shrinking (as PIL is); "spline" is
        scikit-image's cubic spline with its Gaussian anti-aliasing (MedSAM's `resize(order=3)`).
    crop_offset: the centre crop's top-left corner for an odd margin: torchvision rounds half the
        margin, Hugging Face's image processors floor it.
    """

    fit: Literal["stretch", "crop"] = "stretch"
    crop_pct: float = 1.0
    interpolation: Literal["bilinear", "bicubic", "spline"] = "bilinear"
    crop_offset: Literal["round", "floor"] = "round"

    def resized_side(self, size: int) -> int:
        """The short side an image is resized to before a centre crop of `size` (timm's rule)."""
        return math.floor(size / self.crop_pct)


def get_preset(name: str, **overrides) -> Preset:
    """A named preset ("cxr", "path", "ct", "mri", or "auto"), with fields overridden and validated."""
    if name == "auto":
        base = Preset("auto")
    elif name in PRESETS:
        base = PRESETS[name]
    else:
        raise ConfigError(f"unknown preset {name!r}; choose one of {[*PRESETS, 'auto']}")
    fields = {f.name for f in dataclasses.fields(Preset)} - {"name"}
    for key, value in overrides.items():
        if key not in fields:
            raise ConfigError(
                f"preset {name!r}: unknown field {key!r}; fields are {sorted(fields)}"
            )
        if key in _CHOICES and value is not None and value not in _CHOICES[key]:
            raise ConfigError(f"preset field {key!r}: {value!r} is not one of {_CHOICES[key]}")
    if overrides.get("spacing") is not None:
        overrides["spacing"] = _checked_spacing(overrides["spacing"])
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _checked_spacing(value) -> tuple[float, float, float]:
    try:
        spacing = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        spacing = ()
    if len(spacing) != 3 or not all(v > 0 for v in spacing):
        raise ConfigError(f"preset field 'spacing': {value!r} is not three positive sizes in mm")
    return spacing


def resolve_auto(preset: Preset, image: MedicalImage) -> Preset:
    """For the "auto" preset, choose per image from its modality and colour; others pass through."""
    if preset.name != "auto":
        return preset
    if image.modality == "CT":
        base = PRESETS["ct"]
    elif image.modality in ("MR", "PT", "NM"):
        base = PRESETS["mri"]
    elif image.channels == 3:
        base = PRESETS["path"]
    else:
        base = PRESETS["cxr"]
    return dataclasses.replace(
        base, name=f"auto:{base.name}", size=preset.size, fit=preset.fit, spacing=preset.spacing
    )


def to_unit_range(image: MedicalImage, preset: Preset) -> np.ndarray:
    """Intensities of `image` mapped to [0, 1] as the preset says (float32, clipped)."""
    values = image.array
    if preset.intensity == "window":
        lo, hi = preset.window
    elif preset.intensity == "percentile":
        lo, hi = (float(v) for v in np.percentile(values, preset.percentiles))
    elif image.value_range is not None:
        lo, hi = image.value_range
    else:
        lo, hi = float(values.min()), float(values.max())
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((values - lo) * scale, 0.0, 1.0).astype(np.float32)


def _match_channels(array: np.ndarray, colour: str, channels: int) -> np.ndarray:
    if colour == "gray" and array.shape[0] == 3:
        array = np.tensordot(_LUMA, array, axes=1)[None]
    if array.shape[0] == channels:
        return array
    if array.shape[0] == 1:
        return np.repeat(array, channels, axis=0)
    if channels == 1:
        return np.tensordot(_LUMA, array, axes=1)[None]
    raise ImageReadError(f"cannot turn {array.shape[0]} channels into {channels}")


def _target_shape(size: Size, spatial_dims: int) -> tuple[int, ...]:
    if isinstance(size, int):
        return (size,) * spatial_dims
    if size is None or len(size) != spatial_dims:
        raise ConfigError(f"size {size!r} does not fit {spatial_dims}D input")
    return tuple(int(s) for s in size)


def _resize(
    tensor: torch.Tensor, shape: tuple[int, ...], fit: str, recipe: Resize | None
) -> torch.Tensor:
    mode = recipe.interpolation if recipe else "bilinear"
    if tensor.ndim != 3:
        return tensor if tuple(tensor.shape[1:]) == shape else resize_volume(tensor, shape)
    if fit == "crop":
        h, w = tensor.shape[1:]
        if recipe is None:  # the short side fills the crop
            scale = max(shape[0] / h, shape[1] / w)
            inner = (max(shape[0], round(h * scale)), max(shape[1], round(w * scale)))
            top, left = (inner[0] - shape[0]) // 2, (inner[1] - shape[1]) // 2
        else:  # a published recipe: torchvision's Resize(short side) then CenterCrop, exactly
            side = recipe.resized_side(min(shape))
            inner = (side, int(side * w / h)) if h <= w else (int(side * h / w), side)
            inner = (max(inner[0], shape[0]), max(inner[1], shape[1]))
            half = math.floor if recipe.crop_offset == "floor" else round
            top, left = half((inner[0] - shape[0]) / 2), half((inner[1] - shape[1]) / 2)
        tensor = _interpolated(tensor, inner, mode)
        return tensor[:, top : top + shape[0], left : left + shape[1]].contiguous()
    return _interpolated(tensor, shape, mode)


def _interpolated(tensor: torch.Tensor, shape: tuple[int, int], mode: str) -> torch.Tensor:
    """(C, H, W) resized to `shape`; anti-aliased when shrinking."""
    if tuple(tensor.shape[1:]) == tuple(shape):
        return tensor
    if mode == "spline":  # torch has no spline interpolation: scikit-image's, as MedSAM uses it
        from skimage.transform import resize

        array = resize(
            tensor.permute(1, 2, 0).numpy(), shape, order=3, anti_aliasing=True, preserve_range=True
        )
        return torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))
    return F.interpolate(tensor[None], size=shape, mode=mode, antialias=True)[0]


def _resample(tensor: torch.Tensor, image: MedicalImage, target) -> torch.Tensor:
    """Resample a volume to `target` mm when both are known (and differ)."""
    if target is None:
        return tensor
    if image.spacing is None or len(image.spacing) != 3:
        log.warning("%s: voxel spacing unknown, not resampled to %s mm", image.source_id, target)
        return tensor
    if all(abs(s - t) < 1e-6 for s, t in zip(image.spacing, target, strict=True)):
        return tensor
    return resample_to_spacing(tensor, image.spacing, target)


def preprocess(
    image: MedicalImage,
    preset: Preset,
    *,
    spatial_dims: int,
    channels: int,
    native_size: Size,
    native_spacing: tuple[float, ...] | None = None,
    native_resize: Resize | None = None,
) -> torch.Tensor:
    """MedicalImage -> float32 tensor (channels, *size) in [0, 1] for a model of the given shape.

    Volumes are first resampled to the preset's spacing, else `native_spacing` (the model card's
    `input_spacing`), when one is asked for and the image knows its own; then resized to the size.
    2D images follow the model's `native_resize` recipe (its fit, crop_pct, interpolation and crop
    offset); a fit the preset sets replaces the recipe's, a size the preset sets the model's size.

    Raises ImageReadError when the image cannot be made to fit (a 3D volume for a 2D model, say).
    """
    preset = resolve_auto(preset, image)
    if image.spatial_dims != spatial_dims:
        kind = {2: "a 2D image", 3: "a 3D volume"}
        raise ImageReadError(
            f"{image.source_id}: {kind.get(image.spatial_dims, 'an array')} of shape "
            f"{tuple(image.array.shape[1:])} cannot go into a model made for "
            f"{kind.get(spatial_dims, spatial_dims)} input"
        )
    tensor = _unit_tensor(image, preset, channels)
    shape = _target_shape(preset.size if preset.size is not None else native_size, spatial_dims)
    if spatial_dims == 3:
        tensor = _resample(tensor, image, preset.spacing or native_spacing)
    fit = preset.fit or (native_resize.fit if native_resize else "stretch")
    tensor = _resize(tensor, shape, fit, native_resize)
    return tensor.clamp_(0.0, 1.0)


def preprocess_native(image: MedicalImage, preset: Preset, *, channels: int) -> torch.Tensor:
    """A 2D image -> float32 tensor (channels, H, W) in [0, 1] at its own size: `preprocess`
    without the resize, for crops cut from the image as decoded (data/crops.py)."""
    preset = resolve_auto(preset, image)
    if image.spatial_dims != 2:
        raise ImageReadError(
            f"{image.source_id}: an array of shape {tuple(image.array.shape[1:])} is not a 2D image"
        )
    return _unit_tensor(image, preset, channels).clamp_(0.0, 1.0)


def _unit_tensor(image: MedicalImage, preset: Preset, channels: int) -> torch.Tensor:
    unit = _match_channels(to_unit_range(image, preset), preset.colour, channels)
    return torch.from_numpy(np.ascontiguousarray(unit))
