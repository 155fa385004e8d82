"""Volumes into 2D models: the slices of a volume as 2D images, with their index and position.

`--slices each` (every slice), `middle` (the middle one) or `N` (N slices evenly spaced, the first and
last included) along `--slice-axis`, by default the acquisition axis: the axis of the largest voxel
spacing (slices are usually thicker than their pixels), ties to the last (axial in RAS+). Each slice
is shown as a DICOM viewer shows it: for volumes in RAS+ (with an affine) rows run from the higher
index of the second remaining axis down and columns from the higher index of the first down (an axial
slice: anterior at the top, the patient's right on the left); volumes without geometry are
(columns, rows, frames) as stored, so their frames come back exactly as stored.
"""

from dataclasses import dataclass, replace

import numpy as np

from medfound.errors import ConfigError
from medfound.io.image import MedicalImage

FRAME_MARK = "#frame="


@dataclass(frozen=True)
class Slice:
    """One slice of a volume as a 2D image."""

    index: int  # along the slice axis of the volume as read (RAS+ when it has an affine)
    position_mm: float | None  # along the slice axis's direction, from the affine (else spacing)
    image: MedicalImage


def parse_slices(text: str | int) -> str | int:
    """'each', 'middle' or a positive count N; ConfigError otherwise."""
    if text in ("each", "middle"):
        return str(text)
    try:
        count = int(text)
    except (TypeError, ValueError):
        count = 0
    if count < 1:
        raise ConfigError(f"--slices {text!r}: choose each, middle or a number of slices >= 1")
    return count


def acquisition_axis(image: MedicalImage) -> int:
    """The spatial axis (0-2) of the largest voxel spacing, ties to the last; 2 without spacing."""
    if image.spacing is None or len(image.spacing) != 3:
        return 2
    spacing = np.asarray(image.spacing, dtype=float)
    return int(np.flatnonzero(np.isclose(spacing, spacing.max()))[-1])


def chosen_indices(count: int, slices: str | int | tuple) -> list[int]:
    """The slice indices `slices` picks out of `count`; ("draw", seed[, among]): one of those
    `among` picks (default every slice), drawn at random with `seed`."""
    if slices == "each":
        return list(range(count))
    if slices == "middle":
        return [count // 2]
    if isinstance(slices, tuple) and slices[0] == "draw":  # one slice drawn with a given seed
        among = chosen_indices(count, slices[2] if len(slices) > 2 else "each")
        return [among[int(np.random.default_rng(slices[1]).integers(len(among)))]]
    return sorted(
        set(np.linspace(0, count - 1, min(int(slices), count)).round().astype(int).tolist())
    )


def volume_slices(image: MedicalImage, slices: str | int, axis: int | None = None) -> list[Slice]:
    """The chosen slices of a (C, X, Y, Z) volume along `axis` (None: the acquisition axis)."""
    if image.array.ndim != 4:
        raise ValueError(f"volume_slices takes a (C, X, Y, Z) volume, got {image.array.shape}")
    axis = acquisition_axis(image) if axis is None else axis
    if axis not in (0, 1, 2):
        raise ConfigError(f"--slice-axis {axis}: choose 0, 1 or 2")
    kept = [a for a in range(3) if a != axis]
    spacing = tuple(image.spacing[a] for a in reversed(kept)) if image.spacing else None
    parts = []
    for index in chosen_indices(image.array.shape[axis + 1], slices):
        plane = np.take(image.array, index, axis=axis + 1)  # (C, a, b)
        if image.affine is not None:
            plane = plane[:, ::-1, ::-1]  # as a viewer shows RAS+ data (see the module docstring)
        pixels = np.ascontiguousarray(np.swapaxes(plane, 1, 2))  # (C, rows = b, columns = a)
        picture = replace(image, array=pixels, spacing=spacing, affine=None)
        parts.append(Slice(index, _position(image, axis, index), picture))
    return parts


def _position(image: MedicalImage, axis: int, index: int) -> float | None:
    if image.affine is not None:
        voxel = np.zeros(4)
        voxel[axis], voxel[3] = index, 1.0
        direction = image.affine[:3, axis] / np.linalg.norm(image.affine[:3, axis])
        return float(direction @ (image.affine @ voxel)[:3])
    if image.spacing is not None and len(image.spacing) == 3:
        return float(index * image.spacing[axis])
    return None


def wants_slices(image: MedicalImage, slices, spatial_dims: int) -> bool:
    """Whether `image` is read as slices: a volume, for a 2D model, with slices asked for."""
    return slices is not None and spatial_dims == 2 and image.array.ndim == 4


def slice_tensors(image: MedicalImage, slices, axis: int | None, prepare) -> tuple[object, list]:
    """(k, C, H, W) tensor of the chosen slices, each through `prepare` (a MedicalImage -> (C, H, W)
    tensor), and per slice {index, position_mm, count}."""
    import torch

    parts = volume_slices(image, slices, axis)
    rows = [{"index": p.index, "position_mm": p.position_mm, "count": len(parts)} for p in parts]
    return torch.stack([prepare(p.image) for p in parts]), rows


def pool_slices(outputs, items: list[dict]):
    """One output per item from a batch's rows: a sliced volume (an item with `slices`) gave one
    row per slice, pooled here by their mean (a volume's probability is the mean of its slices');
    any other item gave one row."""
    import torch

    sizes = [len(item["slices"]) if "slices" in item else 1 for item in items]
    if sum(sizes) != len(outputs):
        raise ValueError(f"{len(outputs)} output rows for items of {sum(sizes)} rows")
    if all(size == 1 for size in sizes):
        return outputs
    return torch.stack([part.mean(0) for part in torch.split(outputs, sizes)])


def draw_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of the slice an item shows at a visit: fixed by (seed, epoch, index), so that a
    resumed run draws the same slices."""
    return int(np.random.default_rng([seed, epoch, index]).integers(2**31))
