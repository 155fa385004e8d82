"""Standard supervised augmentation on the device: random flips and a small random crop resized
back to the input size, for 2D images and 3D volumes alike, one affine resampling per batch.

REMEDIS fine-tunes with crop and flip (no colour or blur), and rotation when asked (here
`rotation_degrees`, 2D, in the same resampling; corners take the border's pixels); for volumes
every spatial axis may flip. kornia's RandomResizedCrop is 2D only, and its 3D augmentations
would need one call per kind: a single `affine_grid` + `grid_sample` does crop and flips for any
dimensionality in one pass.
"""

import torch
import torch.nn.functional as F


def flip_and_crop(
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    min_scale: float = 0.8,
    flip_axes: tuple[int, ...] | None = None,
    mode: str = "bilinear",
    rotation_degrees: float = 0.0,
) -> torch.Tensor:
    """Per sample: each axis in `flip_axes` (spatial axis numbers, 0 = the first after channels;
    default: the last for 2D, all for 3D) flipped with p 0.5, and a crop whose side is a fraction
    U[min_scale, 1] of the image's (same on every axis), at a random position, resized back; with
    `rotation_degrees` (2D), rotated by U[-r, r] degrees (every sample, as REMEDIS's fine-tuning
    rotation), in the same resampling."""
    if rotation_degrees and images.ndim != 4:
        raise ValueError("rotation is for 2D images only")
    batch, spatial = images.shape[0], images.ndim - 2
    if flip_axes is None:
        flip_axes = (spatial - 1,) if spatial == 2 else tuple(range(spatial))
    device = images.device

    def uniform(*shape):
        return torch.rand(*shape, generator=generator, device=generator.device).to(device)

    scale = min_scale + (1 - min_scale) * uniform(batch, 1)  # (B, 1)
    shift = (2 * uniform(batch, spatial) - 1) * (1 - scale)  # keeps the crop inside the image
    signs = torch.ones(batch, spatial, device=device)
    for axis in flip_axes:
        signs[:, axis] = torch.where(uniform(batch) < 0.5, -1.0, 1.0)
    # affine_grid orders coordinates (x, y[, z]) = the spatial axes reversed.
    theta = torch.zeros(batch, spatial, spatial + 1, device=device)
    diagonal = (signs * scale).flip(1)
    theta[:, range(spatial), range(spatial)] = diagonal
    theta[:, :, spatial] = shift.flip(1)
    if rotation_degrees:  # square inputs: normalised coordinates rotate without distortion
        angle = torch.deg2rad((2 * uniform(batch) - 1) * rotation_degrees)
        cos, sin = torch.cos(angle), torch.sin(angle)
        rotation = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)
        theta[:, :, :2] = rotation @ theta[:, :, :2]
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    # A crop reaching the border samples up to half a pixel beyond the outer pixel centres: repeat
    # the border there (zero padding would darken the edge of every such crop).
    return F.grid_sample(
        images.float(), grid, mode=mode, padding_mode="border", align_corners=False
    )
