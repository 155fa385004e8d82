"""SimCLR's two augmented views per image, as batched operations on the training device.

Order and defaults follow the original (REFERENCE.md section 2): optional histogram equalisation (on
grayscale, returned as 3-channel gray), optional elastic deformation, optional rotation, random resized
crop (area 0.08-1, aspect 3/4-4/3, bicubic; with `crop_in_worker`, cut before all of these, in the
workers, from the image as decoded: data/crops.py), horizontal flip, colour jitter (p 0.8, strength s:
brightness, contrast, saturation in [1 - 0.8s, 1 + 0.8s], hue +-0.2s, clipped), grayscale (p 0.2),
Gaussian blur (p 0.5, sigma 0.1-2, kernel about a tenth of the side). REMEDIS pretrained at 224 and
never rotated (its rotation is a fine-tuning option, applied to every image when enabled): the `cxr`
views are at 224 without rotation, which stays available (`rotation_degrees`, p 1). Its elastic
deformation was called without a definition, so its parameters cannot be recovered: kornia's
elastic transform at alpha 1, sigma 32 px (p 0.5) is medfound's choice (displacement measured in
the README). Parameters are drawn per sample, the
colour-jitter order too (methods/color_jitter.py). Crop, flip, rotation, elastic deformation and
equalisation are kornia's; colour jitter and blur are medfound's own (per-image order; faster on CPU).

Every step samples its parameters and hands them to a deterministic twin (TorchIO's pattern):
`SimCLRViews(...)(images, seed, return_params=True)` also returns what it drew (`ViewParams`), and
`SimCLRViews.apply(images, params)` replays exactly those views without a seed.
"""

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import kornia.augmentation as K
import torch
from torch import nn

from medfound.errors import ConfigError
from medfound.methods.color_jitter import RandomColorJitter
from medfound.methods.config_checks import check_number, check_probabilities, check_range
from medfound.methods.gaussian_blur import RandomGaussianBlur

# The blur kernel and the crop need a few pixels; below this a view carries almost no signal.
MIN_IMAGE_SIZE = 16


@dataclass(frozen=True)
class ViewConfig:
    """Augmentation settings; `preset_views` gives the chest X-ray and pathology defaults."""

    image_size: int = 224
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    color_strength: float = 1.0
    color_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p: float = 0.5
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    rotation_degrees: float = 0.0
    rotation_p: float = 1.0
    equalize_p: float = 0.0
    elastic_p: float = 0.0
    elastic_alpha: float = 1.0
    elastic_sigma: float = 32.0
    # the crop is cut in the workers from the image as decoded (data/crops.py): the views given
    # are pairs already cropped, and only the rest is made here
    crop_in_worker: bool = False

    def __post_init__(self) -> None:
        """Refuse values the augmentations cannot use, naming the field (ConfigError)."""
        size = self.image_size
        if isinstance(size, bool) or not isinstance(size, int) or size < MIN_IMAGE_SIZE:
            raise ConfigError(f"image_size must be an integer >= {MIN_IMAGE_SIZE}, got {size!r}")
        check_probabilities(self)
        if not isinstance(self.crop_in_worker, bool):
            raise ConfigError(f"crop_in_worker must be true or false, got {self.crop_in_worker!r}")
        for name in ("color_strength", "rotation_degrees", "elastic_alpha"):
            check_number(name, getattr(self, name), 0.0, math.inf, "must be >= 0")
        # sigma 0 would divide by zero in the elastic step's Gaussian smoothing
        check_number(
            "elastic_sigma", self.elastic_sigma, 0.0, math.inf, "must be > 0", open_low=True
        )
        # tuples may arrive as YAML lists: store them as tuples so configs compare and hash alike
        object.__setattr__(self, "crop_scale", check_range("crop_scale", self.crop_scale, 1.0))
        object.__setattr__(self, "crop_ratio", check_range("crop_ratio", self.crop_ratio))
        object.__setattr__(self, "blur_sigma", check_range("blur_sigma", self.blur_sigma))


def preset_views(name: str, **overrides) -> ViewConfig:
    """'path' (224, colour jitter and blur) or 'cxr' (224 as REMEDIS pretrained, plus histogram
    equalisation and elastic deformation)."""
    presets = {
        "path": ViewConfig(),
        "cxr": ViewConfig(equalize_p=0.5, elastic_p=0.5),
    }
    if name not in presets:
        raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {sorted(presets)}")
    try:
        return dataclasses.replace(presets[name], **overrides)
    except TypeError as exc:
        raise ConfigError(f"augmentation: {exc}") from exc


@dataclass
class EqualizeParams:
    """Which images are equalised."""

    chosen: torch.Tensor  # (n,) indices into the batch


class GrayEqualize(nn.Module):
    """With probability p per image: grayscale, histogram-equalise, back to 3 identical channels."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.grayscale = K.RandomGrayscale(p=1.0)
        self.equalize = K.RandomEqualize(p=1.0)

    def sample(self, batch: int, device: torch.device) -> EqualizeParams:
        """Draw which images are equalised."""
        return EqualizeParams((torch.rand(batch, device=device) < self.p).nonzero().squeeze(1))

    def apply(self, images: torch.Tensor, params: EqualizeParams) -> torch.Tensor:
        """Equalise images[params.chosen] (deterministic: both kornia steps run with p=1)."""
        if params.chosen.numel() == 0:
            return images
        out = images.clone()
        out[params.chosen] = self.equalize(self.grayscale(images[params.chosen]))
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [0, 1] -> images with about a fraction p of them equalised."""
        return self.apply(images, self.sample(images.shape[0], images.device))


@dataclass
class ViewParams:
    """What one call of SimCLRViews drew, step by step; `SimCLRViews.apply` replays it, seedless.

    `steps` maps each step's name (in the order they run: equalize, elastic, rotation, crop, flip,
    color, grayscale, blur; only those enabled) to its parameters: kornia's dict of per-view tensors
    for kornia's steps (`batch_prob` says which views it changed), medfound's *Params for its own.
    Views are [view-1; view-2], so per-view tensors have 2B rows for B images.
    """

    input_shape: tuple[int, ...]  # the (B, 3, H, W) images these views were drawn for
    steps: dict[str, Any]


class SimCLRViews(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> views (2B, 3, S, S) laid out [view-1; view-2].

    With `crop_in_worker`, the images are pairs already cropped to S (2B, 3, S, S), each image's
    two views next to each other (as data/view_pairs.py gives them): they are laid out [view-1;
    view-2] and every other step is applied."""

    def __init__(self, config: ViewConfig):
        super().__init__()
        self.config = c = config
        side = c.image_size
        kernel = max(3, int(side * 0.1) // 2 * 2 + 1)  # odd, about a tenth of the side
        steps: dict[str, nn.Module] = {}
        if c.equalize_p > 0:
            steps["equalize"] = GrayEqualize(c.equalize_p)
        if c.elastic_p > 0:
            steps["elastic"] = K.RandomElasticTransform(
                sigma=(c.elastic_sigma, c.elastic_sigma),
                alpha=(c.elastic_alpha, c.elastic_alpha),
                p=c.elastic_p,
            )
        if c.rotation_degrees > 0:
            steps["rotation"] = K.RandomRotation(c.rotation_degrees, p=c.rotation_p)
        if not c.crop_in_worker:
            steps["crop"] = K.RandomResizedCrop(
                (side, side), scale=c.crop_scale, ratio=c.crop_ratio, resample="bicubic"
            )
        if c.flip_p > 0:
            steps["flip"] = K.RandomHorizontalFlip(p=c.flip_p)
        if c.color_p > 0 and c.color_strength > 0:
            steps["color"] = RandomColorJitter(c.color_strength, p=c.color_p)
        if c.grayscale_p > 0:
            steps["grayscale"] = K.RandomGrayscale(p=c.grayscale_p)
        if c.blur_p > 0:
            steps["blur"] = RandomGaussianBlur(kernel, c.blur_sigma, p=c.blur_p)
        self.steps = nn.ModuleDict(steps)

    def forward(
        self, images: torch.Tensor, seed: int | None = None, *, return_params: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, ViewParams]:
        """Two independent views of every image; the same `seed` gives the same views.

        With `return_params`, also the parameters drawn, which `apply` turns into the same views.
        """
        _check_images(images)
        drawn: dict[str, Any] = {}
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            x = self._views(images)
            # each step draws, then applies: the same random stream, in the same order, as before
            for name, step in self.steps.items():
                drawn[name] = _sample(step, x)
                x = _apply(step, x, drawn[name])
        views = x.clamp_(0.0, 1.0)
        return (views, ViewParams(tuple(images.shape), drawn)) if return_params else views

    def apply(self, images: torch.Tensor, params: ViewParams) -> torch.Tensor:
        """The views `params` describe, without drawing anything (TorchIO's deterministic twin)."""
        _check_images(images)
        if tuple(images.shape) != params.input_shape or params.steps.keys() != self.steps.keys():
            raise ValueError(
                f"these parameters were drawn for images {params.input_shape} and steps "
                f"{list(params.steps)}; got images {tuple(images.shape)} "
                f"and steps {list(self.steps)}"
            )
        x = self._views(images)
        for name, step in self.steps.items():
            x = _apply(step, x, params.steps[name])
        return x.clamp_(0.0, 1.0)

    def _views(self, images: torch.Tensor) -> torch.Tensor:
        """[view-1; view-2] before the steps: the images twice, or the cropped pairs laid out."""
        if not self.config.crop_in_worker:
            return torch.cat([images, images])
        if images.shape[0] % 2:
            raise ValueError(f"cropped view pairs come in twos, got {images.shape[0]} images")
        return torch.cat([images[0::2], images[1::2]])


def _check_images(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")


def _sample(step: nn.Module, x: torch.Tensor) -> Any:
    """One step's parameters for the batch x: kornia's own sampler, or medfound's `sample`."""
    if isinstance(step, K.AugmentationBase2D):
        return step.forward_parameters(x.shape)
    return step.sample(x.shape[0], x.device)


def _apply(step: nn.Module, x: torch.Tensor, params: Any) -> torch.Tensor:
    """One step with given parameters; kornia draws nothing when handed `params`."""
    if isinstance(step, K.AugmentationBase2D):
        return step(x, params=params)
    return step.apply(x, params)
