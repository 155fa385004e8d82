"""Segmentation training patches and whole images, read from a SegmentationTable.

`SegmentationPatchDataset` is keyed like data/cubes.py's CubeDataset: `dataset[(epoch, index)]` reads
case `index` once (from a per-worker cache bounded in bytes) and cuts `patches_per_item` patches whose
positions come from `np.random.default_rng([seed, epoch, index])`, so a resumed run draws the same
patches. With probability `foreground_ratio` a patch is centred on a random foreground voxel (any
class > 0; the window is shifted inside the image, so it still holds that voxel), else its corner is
drawn uniformly. MONAI's RandCropByPosNegLabeld does the same with its negatives centred on
background voxels and a legacy RandomState; this is written with numpy to draw negatives uniformly from
the key's Generator.
"""

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.cubes import VolumeCache, crop, pad_to_cube, sample_corner
from medfound.data.datasets import epoch_and_index
from medfound.data.segmentation import (
    Instances,
    SegmentationCase,
    SegmentationTable,
    checked_instances,
    read_segmentation_case,
)
from medfound.errors import ConfigError, ImageReadError, MedfoundError
from medfound.io.image import MedicalImage
from medfound.io.presets import Preset

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedCase:
    """A case ready for cutting: what the per-worker cache keeps."""

    image: np.ndarray  # (C, *spatial) float32 in [0, 1], padded to at least the patch
    mask: np.ndarray  # (*spatial) in the smallest unsigned type holding its labels
    foreground: np.ndarray  # flat indices of the voxels with a label > 0
    padded: bool

    @property
    def nbytes(self) -> int:
        """What the case holds in memory (VolumeCache bounds the sum of these)."""
        return self.image.nbytes + self.mask.nbytes + self.foreground.nbytes


class SegmentationPatchDataset(Dataset):
    """Patches of images and masks: `dataset[(epoch, index)]` (or `dataset[index]`, epoch 0) gives
    {index, source, tensor (k, C, *patch) float32 in [0, 1], target (k, *patch) int64, group,
    positions, centred, padded} or {index, source, error}.

    table, indices: the cases; item `index` is case `indices[index]` of the table.
    preset: the intensity mapping to [0, 1]; its size and spacing are not used.
    patch_size: (H, W) for 2D tables, (X, Y, Z) for 3D. Smaller images are padded, centred (image 0,
        mask 0).
    foreground_ratio: the probability that a patch is centred on a foreground voxel (cases without
        foreground get uniform patches).
    instances: how masks are read; None: the table's.
    cache_mb: bound of each worker's cache of loaded cases (0: no cache).
    """

    keyed_by_epoch = True  # the engine's batch sampler passes (epoch, index) keys

    def __init__(
        self,
        table: SegmentationTable,
        indices: Sequence[int],
        preset: Preset,
        *,
        patch_size: Sequence[int],
        patches_per_item: int = 1,
        foreground_ratio: float = 0.5,
        seed: int = 0,
        instances: Instances | None = None,
        cache_mb: float = 1024.0,
    ):
        self.table, self.indices = table, checked_indices(indices, len(table.cases))
        self.preset = preset
        self.instances = checked_instances(table.instances if instances is None else instances)
        self.patch = _checked_patch(patch_size, table.dims)
        if (
            isinstance(patches_per_item, bool)
            or not isinstance(patches_per_item, int)
            or patches_per_item < 1
        ):
            raise ConfigError(f"patches_per_item: {patches_per_item!r} is not a whole number >= 1")
        if not 0.0 <= foreground_ratio <= 1.0:
            raise ConfigError(f"foreground_ratio: {foreground_ratio!r} is not in [0, 1]")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: {seed!r} is not a non-negative whole number")
        if not cache_mb >= 0:
            raise ConfigError(f"cache_mb: {cache_mb!r} is not a size in MB of at least 0")
        self.samples_per_item = patches_per_item
        self.ratio, self.seed = float(foreground_ratio), seed
        self.cache = VolumeCache(int(cache_mb * 2**20))
        self._warned_padding = False

    def __len__(self) -> int:
        return len(self.indices)

    def __getstate__(self) -> dict:
        # Workers started by spawn get the dataset pickled: without the main process's cases.
        state = self.__dict__.copy()
        state["cache"] = VolumeCache(self.cache.max_bytes)
        return state

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = epoch_and_index(key)
        case = self.table.cases[self.indices[index]]
        try:
            loaded = self._case(index, case)
            return {
                "index": index,
                "source": case.id,
                **self._patches(loaded, epoch, index),
                "group": True,
                "padded": loaded.padded,
            }
        except MedfoundError as exc:
            return {"index": index, "source": case.id, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            return {"index": index, "source": case.id, "error": f"{type(exc).__name__}: {exc}"}

    def _patches(self, loaded: LoadedCase, epoch: int, index: int) -> dict:
        rng = np.random.default_rng([self.seed, epoch, index])
        spatial = loaded.image.shape[1:]
        images, masks, positions, centred = [], [], [], []
        for _ in range(self.samples_per_item):
            # The coin is tossed for every patch, so the draws do not depend on the foreground.
            on_foreground = rng.random() < self.ratio and loaded.foreground.size > 0
            if on_foreground:
                flat = loaded.foreground[rng.integers(loaded.foreground.size)]
                centre = np.unravel_index(int(flat), spatial)
                corner = tuple(
                    int(min(max(c - p // 2, 0), n - p))
                    for c, p, n in zip(centre, self.patch, spatial, strict=True)
                )
            else:
                corner = sample_corner(rng, spatial, self.patch)
            images.append(crop(loaded.image, corner, self.patch))
            masks.append(crop(loaded.mask[None], corner, self.patch)[0])
            positions.append(corner)
            centred.append(bool(on_foreground))
        return {
            "tensor": torch.from_numpy(np.stack(images)),  # copies: the cached case stays intact
            "target": torch.from_numpy(np.stack(masks).astype(np.int64)),
            "positions": positions,
            "centred": centred,
        }

    def _case(self, index: int, case: SegmentationCase) -> LoadedCase:
        """Case `index` read, checked and padded: from the cache if there."""
        entry = self.cache.get(index)
        if entry is None:
            entry = (self._load(case), False)
            self.cache.put(index, entry)
        return entry[0]

    def _load(self, case: SegmentationCase) -> LoadedCase:
        image, mask = read_case_checked(self.table, case, self.preset, self.instances)
        if mask is None:
            raise ImageReadError(f"{case.id}: no mask (training needs one)")
        array, padded = image.array, False
        if any(n < p for n, p in zip(array.shape[1:], self.patch, strict=True)):
            if not self._warned_padding:  # once per worker: small images may be the rule
                self._warned_padding = True
                log.warning(
                    "%s: image of shape %s padded for patch %s (other small images are padded "
                    "too, silently)", case.id, array.shape[1:], self.patch,
                )  # fmt: skip
            array = pad_to_cube(array, self.patch, 0.0)
            mask = pad_to_cube(mask[None], self.patch, 0)[0]
            padded = True
        foreground = np.flatnonzero(mask)
        if mask.size < 2**31:
            foreground = foreground.astype(np.int32)
        small = mask.astype(np.min_scalar_type(int(mask.max()) if mask.size else 0))
        for part in (array, small, foreground):
            part.flags.writeable = False  # cached and shared by later items
        return LoadedCase(array, small, foreground, padded)


class SegmentationImageDataset(Dataset):
    """Whole images: `dataset[index]` gives {index, source, tensor (C, *shape) float32 in [0, 1],
    target (*shape) int64 (absent for cases without a mask), affine, spacing} or
    {index, source, error}. `affine` (4x4 voxel -> RAS mm of the array, or None for 2D images) and
    `spacing` let predictions be written with the input's geometry.
    """

    def __init__(
        self,
        table: SegmentationTable,
        indices: Sequence[int],
        preset: Preset,
        *,
        instances: Instances | None = None,
    ):
        self.table, self.indices = table, checked_indices(indices, len(table.cases))
        self.preset = preset
        self.instances = checked_instances(table.instances if instances is None else instances)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict:
        case = self.table.cases[self.indices[index]]
        try:
            image, mask = read_case_checked(self.table, case, self.preset, self.instances)
        except MedfoundError as exc:
            return {"index": index, "source": case.id, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            return {"index": index, "source": case.id, "error": f"{type(exc).__name__}: {exc}"}
        item = {
            "index": index,
            "source": case.id,
            "tensor": torch.from_numpy(image.array),
            "affine": image.affine,
            "spacing": image.spacing,
        }
        if mask is not None:
            item["target"] = torch.from_numpy(mask)
        return item


def read_case_checked(
    table: SegmentationTable, case: SegmentationCase, preset: Preset, instances: Instances
) -> tuple[MedicalImage, np.ndarray | None]:
    """read_segmentation_case, then the table's promises checked: dims, channels, label values
    within the classes (ImageReadError otherwise: the item is reported and skipped)."""
    image, mask = read_segmentation_case(case, preset, instances)
    if image.spatial_dims != table.dims:
        raise ImageReadError(
            f"{case.id}: a {image.spatial_dims}D image (shape {image.array.shape[1:]}) in a "
            f"{table.dims}D data set"
        )
    if image.channels != table.channels:
        raise ImageReadError(
            f"{case.id}: {image.channels} channels, the data set has {table.channels}"
        )
    if mask is not None and mask.size and mask.max() >= len(table.classes):
        raise ImageReadError(
            f"{case.id}: mask label {int(mask.max())} outside the {len(table.classes)} classes"
        )
    return image, mask


def checked_indices(indices: Sequence[int], size: int) -> list[int]:
    """`indices` as a list of ints, each a valid case index, else a ConfigError."""
    values = [int(i) for i in indices]
    bad = [i for i in values if not 0 <= i < size]
    if bad:
        raise ConfigError(f"indices: {bad[:8]} are not case indices 0..{size - 1}")
    return values


def _checked_patch(patch_size: Sequence[int], dims: int) -> tuple[int, ...]:
    try:
        patch = tuple(int(p) for p in patch_size)
        exact = all(int(p) == p for p in patch_size)
    except (TypeError, ValueError):
        patch, exact = (), False
    if len(patch) != dims or not exact or not all(p > 0 for p in patch):
        raise ConfigError(f"patch_size: {patch_size!r} is not {dims} positive whole sizes")
    return patch
