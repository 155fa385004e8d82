"""SimCLR's two augmented views per image, as batched operations on the training device.

Order and defaults follow the original (REFERENCE.md section 2): optional histogram equalisation (on
grayscale, returned as 3-channel gray), optional elastic deformation, optional rotation, random resized
crop (area 0.08-1, aspect 3/4-4/3, bicubic), horizontal flip, colour jitter (p 0.8, strength s:
brightness, contrast, saturation in [1 - 0.8s, 1 + 0.8s], hue +-0.2s, clipped), grayscale (p 0.2),
Gaussian blur (p 0.5, sigma 0.1-2, kernel about a tenth of the side). The original never applied its
rotation and had no elastic deformation; here both work. Parameters are drawn per sample, the
colour-jitter order too (methods/color_jitter.py). Crop, flip, rotation, elastic deformation and
equalisation are kornia's; colour jitter and blur are medfound's own (per-image order; faster on CPU).
"""

import dataclasses
from dataclasses import dataclass

import kornia.augmentation as K
import torch
from torch import nn

from medfound.errors import ConfigError
from medfound.methods.color_jitter import RandomColorJitter
from medfound.methods.gaussian_blur import RandomGaussianBlur


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
    rotation_p: float = 0.5
    equalize_p: float = 0.0
    elastic_p: float = 0.0
    elastic_alpha: float = 1.0
    elastic_sigma: float = 32.0


def preset_views(name: str, **overrides) -> ViewConfig:
    """'path' (224, colour jitter and blur) or 'cxr' (448, plus equalisation, elastic, rotation)."""
    presets = {
        "path": ViewConfig(),
        "cxr": ViewConfig(image_size=448, equalize_p=0.5, elastic_p=0.5, rotation_degrees=20.0),
    }
    if name not in presets:
        raise ConfigError(f"unknown augmentation preset {name!r}; choose one of {sorted(presets)}")
    try:
        return dataclasses.replace(presets[name], **overrides)
    except TypeError as exc:
        raise ConfigError(f"augmentation: {exc}") from exc


class GrayEqualize(nn.Module):
    """With probability p per image: grayscale, histogram-equalise, back to 3 identical channels."""

    def __init__(self, p: float):
        super().__init__()
        self.p = p
        self.equalize = K.RandomEqualize(p=1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        chosen = torch.rand(images.shape[0], device=images.device) < self.p
        if not chosen.any():
            return images
        gray = K.RandomGrayscale(p=1.0)(images[chosen])
        out = images.clone()
        out[chosen] = self.equalize(gray)
        return out


class SimCLRViews(nn.Module):
    """images (B, 3, H, W) in [0, 1] -> views (2B, 3, S, S) laid out [view-1; view-2]."""

    def __init__(self, config: ViewConfig):
        super().__init__()
        self.config = c = config
        side = c.image_size
        kernel = max(3, int(side * 0.1) // 2 * 2 + 1)  # odd, about a tenth of the side
        steps: list[nn.Module] = []
        if c.equalize_p > 0:
            steps.append(GrayEqualize(c.equalize_p))
        if c.elastic_p > 0:
            steps.append(
                K.RandomElasticTransform(
                    sigma=(c.elastic_sigma, c.elastic_sigma),
                    alpha=(c.elastic_alpha, c.elastic_alpha),
                    p=c.elastic_p,
                )
            )
        if c.rotation_degrees > 0:
            steps.append(K.RandomRotation(c.rotation_degrees, p=c.rotation_p))
        steps.append(
            K.RandomResizedCrop(
                (side, side), scale=c.crop_scale, ratio=c.crop_ratio, resample="bicubic"
            )
        )
        if c.flip_p > 0:
            steps.append(K.RandomHorizontalFlip(p=c.flip_p))
        if c.color_p > 0 and c.color_strength > 0:
            steps.append(RandomColorJitter(c.color_strength, p=c.color_p))
        if c.grayscale_p > 0:
            steps.append(K.RandomGrayscale(p=c.grayscale_p))
        if c.blur_p > 0:
            steps.append(RandomGaussianBlur(kernel, c.blur_sigma, p=c.blur_p))
        self.steps = nn.Sequential(*steps)

    def forward(self, images: torch.Tensor, seed: int | None = None) -> torch.Tensor:
        """Two independent views of every image; the same `seed` gives the same views."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected (B, 3, H, W) images, got {tuple(images.shape)}")
        devices = [images.device] if images.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(seed)
            views = self.steps(torch.cat([images, images]))
        return views.clamp_(0.0, 1.0)
