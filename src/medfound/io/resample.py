"""Resizing volumes without aliasing, and resampling them to a voxel spacing.

Shrinking by plain trilinear interpolation samples a few input voxels per output voxel and lets fine
texture fold into false patterns; as scikit-image's `resize(anti_aliasing=True)`, each shrunk axis is
first smoothed with a Gaussian of sigma (factor - 1) / 2 input voxels. MONAI's `Resize(anti_aliasing=True)`
does the same but pads with zeros, which darkens the borders of a volume; here the edges are replicated.
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _gaussian_prefilter(batch: torch.Tensor, sigmas: Sequence[float]) -> torch.Tensor:
    from monai.networks.layers import gaussian_1d, separable_filtering

    if not any(s > 0 for s in sigmas):
        return batch
    kernels = [
        gaussian_1d(torch.tensor(float(s)), truncated=4.0, normalize=True).to(batch)
        if s > 0
        else torch.ones(1, dtype=batch.dtype, device=batch.device)
        for s in sigmas
    ]
    return separable_filtering(batch, kernels, mode="replicate")


def resize_volume(tensor: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """(C, X, Y, Z) -> (C, *shape), trilinear, Gaussian-smoothed along every axis that shrinks."""
    shape = tuple(int(s) for s in shape)
    if tuple(tensor.shape[1:]) == shape:
        return tensor
    sigmas = [max((n / s - 1.0) / 2.0, 0.0) for n, s in zip(tensor.shape[1:], shape, strict=True)]
    batch = _gaussian_prefilter(tensor[None].float(), sigmas)
    return F.interpolate(batch, size=shape, mode="trilinear", align_corners=False)[0]


def spacing_shape(
    shape: Sequence[int], spacing: Sequence[float], target: Sequence[float]
) -> tuple[int, ...]:
    """The shape that covers the same extent as `shape` voxels of `spacing` mm at `target` mm."""
    return tuple(max(1, round(n * s / t)) for n, s, t in zip(shape, spacing, target, strict=True))


def resample_to_spacing(
    tensor: torch.Tensor, spacing: Sequence[float], target: Sequence[float]
) -> torch.Tensor:
    """(C, X, Y, Z) at `spacing` mm -> the same field of view at `target` mm (anti-aliased)."""
    return resize_volume(tensor, spacing_shape(tensor.shape[1:], spacing, target))
