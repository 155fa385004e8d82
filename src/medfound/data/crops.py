"""SimCLR's random resized crops, cut from the image as decoded and resized once (in the workers).

The original crops the decoded image at its own resolution (a chest X-ray of ~2k px) and resizes the
crop once, bicubic: the smallest crops (8% of the area) keep their native detail. Stretching every
image to S x S first and cropping that would upsample a 63-px crop 3.5x at 224. Each view's box is
drawn as torchvision's RandomResizedCrop draws it (area a fraction U[scale] of the image, log-uniform
aspect in `ratio`, 10 attempts, then the centre crop of the nearest allowed aspect); written here
because torchvision draws from torch's global random stream, and a worker needs a generator seeded
per item (so that a resumed run cuts the same crops).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class CropSpec:
    """Views of `size` px from boxes covering a fraction `scale` of the image, aspect in `ratio`."""

    size: int
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)


def crop_box(
    height: int, width: int, rng: np.random.Generator, spec: CropSpec
) -> tuple[int, int, int, int]:
    """(top, left, box height, box width) of one random resized crop of a height x width image."""
    area = height * width
    log_ratio = (math.log(spec.ratio[0]), math.log(spec.ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*spec.scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    aspect = width / height  # fallback: the whole image, cut to the nearest allowed aspect
    if aspect < spec.ratio[0]:
        w, h = width, round(width / spec.ratio[0])
    elif aspect > spec.ratio[1]:
        h, w = height, round(height * spec.ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resized(image: torch.Tensor, box: tuple[int, int, int, int], size: int) -> torch.Tensor:
    """The box of a (C, H, W) image in [0, 1], resized once to size x size (bicubic, antialiased
    when shrinking), clipped to [0, 1] (bicubic overshoots at edges)."""
    top, left, h, w = box
    part = image[None, :, top : top + h, left : left + w].float()
    if (h, w) != (size, size):
        part = F.interpolate(part, size=(size, size), mode="bicubic", antialias=True)
    return part[0].clamp_(0.0, 1.0)


def view_pair(
    first: torch.Tensor, second: torch.Tensor, rng: np.random.Generator, spec: CropSpec
) -> torch.Tensor:
    """(2, C, S, S): one random resized crop of each image (the same image twice for SimCLR's two
    views of one image; two images of one patient for MICLe)."""
    return torch.stack(
        [
            crop_resized(image, crop_box(*image.shape[1:], rng, spec), spec.size)
            for image in (first, second)
        ]
    )
