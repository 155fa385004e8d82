"""Sub-volumes (cubes) sampled on the fly from whole scans, several per loaded volume (Models Genesis).

Each item is one volume read giving `cubes_per_volume` cubes. Positions are drawn from
`np.random.default_rng([seed, epoch, index])`, so they are a pure function of the key and the data: a
resumed run draws the same cubes, and the per-worker cache of loaded volumes only saves decoding.
A foreground filter (the original's "mostly lung" rule, generalised) redraws a cube until at least
`foreground_fraction` of its voxels exceed `foreground_threshold` on the [0, 1] intensities, for at
most `max_tries` draws; then the best-scoring draw is used and counted in the item's `fallbacks`.
"""

import dataclasses
import logging
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.datasets import epoch_and_index
from medfound.data.sources import ImageSource
from medfound.errors import ConfigError, ImageReadError, MedfoundError
from medfound.io.image import MedicalImage
from medfound.io.presets import Preset, preprocess
from medfound.io.readers import read_image
from medfound.io.resample import spacing_shape
from medfound.privacy import UidPolicy

log = logging.getLogger(__name__)


def sample_corner(
    rng: np.random.Generator, shape: Sequence[int], cube: Sequence[int]
) -> tuple[int, ...]:
    """A uniformly drawn corner of a `cube` lying wholly inside `shape` (both spatial, same length)."""
    return tuple(int(rng.integers(0, n - c + 1)) for n, c in zip(shape, cube, strict=True))


def foreground_share(patch: np.ndarray, threshold: float) -> float:
    """The share of the voxels of `patch` whose value exceeds `threshold`."""
    return float(np.count_nonzero(patch > threshold)) / patch.size if patch.size else 0.0


def pad_to_cube(array: np.ndarray, cube: Sequence[int], value: float) -> np.ndarray:
    """Pad the leading spatial axes of a (C, *spatial) array with `value`, centred, until each is at
    least the cube's size along it; axes beyond the cube's (the slice axis of 2D crops) are kept."""
    short = [max(c - n, 0) for n, c in zip(array.shape[1:], cube, strict=False)]
    if not any(short):
        return array
    widths = [(0, 0)] + [(s // 2, s - s // 2) for s in short]
    widths += [(0, 0)] * (array.ndim - len(widths))
    return np.pad(array, widths, mode="constant", constant_values=value)


def crop(array: np.ndarray, corner: Sequence[int], cube: Sequence[int]) -> np.ndarray:
    """The (C, *cube) view of a (C, *spatial) array at `corner`; a 2D cube from a volume takes the
    axial slice given by the corner's third value."""
    window = tuple(slice(p, p + c) for p, c in zip(corner, cube, strict=False))
    if len(corner) > len(cube):  # (x, y, z): the crop of axial slice z
        window += (corner[len(cube)],)
    return array[(slice(None), *window)]


def draw_cube(
    rng: np.random.Generator,
    array: np.ndarray,
    cube: Sequence[int],
    threshold: float,
    fraction: float,
    max_tries: int,
) -> tuple[tuple[int, ...], bool]:
    """Draw cube corners until the cube's foreground share reaches `fraction`, at most `max_tries`.

    For a 2D cube from a volume, each draw picks an axial slice first. Returns the corner (with the
    slice index appended for those) and whether the filter passed; when it never did, the corner of
    the best-scoring draw.
    """
    spatial = array.shape[1:]
    best, best_share = None, -1.0
    for _ in range(max_tries):
        corner = sample_corner(rng, spatial[: len(cube)], cube)
        if len(spatial) > len(cube):
            corner += (int(rng.integers(0, spatial[len(cube)])),)
        share = foreground_share(crop(array, corner, cube), threshold)
        if share >= fraction:
            return corner, True
        if share > best_share:
            best, best_share = corner, share
    return best, False


class VolumeCache:
    """A least-recently-used map from source index to loaded volume, bounded in bytes.

    Written here because the stdlib's lru_cache bounds entries, not memory. Each DataLoader worker
    holds its own copy (the dataset is copied into each), kept across epochs by persistent workers.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: OrderedDict[int, tuple[np.ndarray, bool]] = OrderedDict()
        self.bytes = 0
        self.hits = self.misses = self.evictions = 0

    def get(self, key: int) -> tuple[np.ndarray, bool] | None:
        """The entry for `key` (now the most recent), or None."""
        entry = self.entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        self.hits += 1
        self.entries.move_to_end(key)
        return entry

    def put(self, key: int, entry: tuple[np.ndarray, bool]) -> bool:
        """Keep `entry`, evicting the least recently used ones to stay within the bound; an entry
        larger than the whole bound is not kept (returns False)."""
        size = entry[0].nbytes
        if size > self.max_bytes:
            return False
        while self.entries and self.bytes + size > self.max_bytes:
            _, (old, _) = self.entries.popitem(last=False)
            self.bytes -= old.nbytes
            self.evictions += 1
        self.entries[key] = entry
        self.bytes += size
        return True


class CubeDataset(Dataset):
    """Cubes sampled from whole scans: `dataset[(epoch, index)]` (or `dataset[index]`, epoch 0) reads
    volume `index` once and returns {index, source, tensor (k, 1, *cube) in [0, 1], group, fallbacks,
    padded, positions}, or {index, source, error} when the volume cannot be used.

    sources: volumes (NIfTI, DICOM series, MetaImage, 3D .npy); for `dims=2` also 2D images.
    preset: the intensity mapping to [0, 1] (ct window, mri percentiles, cxr range); its size and
        spacing are not used: cubes are cut at the scan's resolution, or at `target_spacing`.
    cube: (X, Y, Z) for `dims=3`; (H, W) for `dims=2`, cut from 2D images, or from a random axial
        slice of a volume (its X, Y).
    target_spacing: (X, Y, Z) mm to resample volumes to once at load (anti-aliased); None keeps each
        scan's spacing, as the original did. 2D images are never resampled.
    small: a volume smaller than the cube along an axis is padded with its minimum ("pad") or
        refused as an error item ("refuse").
    cache_mb: bound of each worker's cache of loaded, preprocessed volumes (0: no cache).
    """

    keyed_by_epoch = True  # the engine's batch sampler passes (epoch, index) keys

    def __init__(
        self,
        sources: list[ImageSource],
        preset: Preset,
        *,
        cube: Sequence[int] = (64, 64, 32),
        cubes_per_volume: int = 1,
        target_spacing: Sequence[float] | None = None,
        foreground_threshold: float = 0.0,
        foreground_fraction: float = 0.0,
        max_tries: int = 20,
        small: str = "pad",
        seed: int = 0,
        cache_mb: float = 1024.0,
        dims: int = 3,
        uids: UidPolicy | None = None,
    ):
        if dims not in (2, 3):
            raise ConfigError(f"dims: {dims!r} is not 2 or 3")
        self.cube = _checked_sizes("cube", cube, dims, int)
        self.target_spacing = (
            None if target_spacing is None else _checked_sizes("target_spacing", target_spacing, 3)
        )
        fractions = {
            "foreground_threshold": foreground_threshold,
            "foreground_fraction": foreground_fraction,
        }
        for name, value in fractions.items():
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"{name}: {value!r} is not in [0, 1]")
        for name, value in (("cubes_per_volume", cubes_per_volume), ("max_tries", max_tries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: {value!r} is not a whole number of at least 1")
        if small not in ("pad", "refuse"):
            raise ConfigError(f"small: {small!r} is not 'pad' or 'refuse'")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"seed: {seed!r} is not a non-negative whole number")
        if not cache_mb >= 0:
            raise ConfigError(f"cache_mb: {cache_mb!r} is not a size in MB of at least 0")
        self.sources, self.uids, self.dims = sources, uids, dims
        # Intensities from the preset; the cube sets the size and target_spacing the resampling.
        self.preset = dataclasses.replace(preset, size=None, spacing=self.target_spacing)
        self.samples_per_item = cubes_per_volume
        self.threshold, self.fraction = float(foreground_threshold), float(foreground_fraction)
        self.max_tries, self.small, self.seed = max_tries, small, seed
        self.cache = VolumeCache(int(cache_mb * 2**20))
        self._warned = False
        self._warned_fallbacks: set[int] = set()

    def __len__(self) -> int:
        return len(self.sources)

    def __getstate__(self) -> dict:
        # Workers started by spawn get the dataset pickled: without the main process's volumes.
        state = self.__dict__.copy()
        state["cache"] = VolumeCache(self.cache.max_bytes)
        return state

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = epoch_and_index(key)
        source = self.sources[index]
        try:
            array, padded = self._volume(index)
            return {
                "index": index,
                "source": source.id,
                **self._cubes(array, epoch, index),
                "group": True,
                "padded": padded,
            }
        except MedfoundError as exc:
            return {"index": index, "source": source.id, "error": str(exc)}
        except Exception as exc:  # a library bug on one odd file must not end the whole run
            return {"index": index, "source": source.id, "error": f"{type(exc).__name__}: {exc}"}

    def _warn_fallbacks(self, index: int, fallbacks: int) -> None:
        """Say once per volume (and worker) that the foreground filter never passed there."""
        if fallbacks and index not in self._warned_fallbacks:
            self._warned_fallbacks.add(index)
            log.warning(
                "%s: %d of %d cubes never met the foreground filter (%.0f%% above %.3g) in %d "
                "draws; the best draw was used (lower --foreground-fraction if this is common)",
                self.sources[index].id,
                fallbacks,
                self.samples_per_item,
                100 * self.fraction,
                self.threshold,
                self.max_tries,
            )

    def _cubes(self, array: np.ndarray, epoch: int, index: int) -> dict:
        rng = np.random.default_rng([self.seed, epoch, index])
        cubes, positions, fallbacks = [], [], 0
        for _ in range(self.samples_per_item):
            corner, passed = draw_cube(
                rng, array, self.cube, self.threshold, self.fraction, self.max_tries
            )
            fallbacks += 0 if passed else 1
            positions.append(corner)
            cubes.append(crop(array, corner, self.cube))
        tensor = torch.from_numpy(np.stack(cubes))  # a copy: the cached volume stays untouched
        self._warn_fallbacks(index, fallbacks)
        return {"tensor": tensor, "fallbacks": fallbacks, "positions": positions}

    def _volume(self, index: int) -> tuple[np.ndarray, bool]:
        """Volume `index` read, mapped to [0, 1], resampled and padded: from the cache if there."""
        entry = self.cache.get(index)
        if entry is None:
            entry = self._load(self.sources[index])
            entry[0].flags.writeable = False  # cached and shared by later items
            if not self.cache.put(index, entry) and self.cache.max_bytes and not self._warned:
                self._warned = True  # once per worker: every item of such volumes decodes anew
                log.warning(
                    "%s: the loaded volume (%.0f MB) is larger than the cube cache (%.0f MB); "
                    "raise cache_mb so that several cubes and epochs share one decoding",
                    self.sources[index].id, entry[0].nbytes / 2**20, self.cache.max_bytes / 2**20,
                )  # fmt: skip
        return entry

    def _load(self, source: ImageSource) -> tuple[np.ndarray, bool]:
        image = read_image(source.target, uids=self.uids)
        if self.dims == 3 and image.spatial_dims == 2:
            raise ImageReadError(
                f"{source.id}: a 2D image (shape {tuple(image.array.shape[1:])}) where a volume "
                f"is needed for {len(self.cube)}D cubes {self.cube}"
            )
        shape = _loaded_shape(image, self.target_spacing)
        tensor = preprocess(
            image, self.preset, spatial_dims=image.spatial_dims, channels=1, native_size=shape
        )
        array = tensor.numpy()
        spatial = array.shape[1 : 1 + len(self.cube)]
        if all(n >= c for n, c in zip(spatial, self.cube, strict=True)):
            return array, False
        kind = "volume" if image.spatial_dims == 3 else "image"
        if self.small == "refuse":
            raise ImageReadError(
                f"{source.id}: {kind} of shape {tuple(array.shape[1:])} is smaller than the cube "
                f"{self.cube}; pad it (small='pad') or leave it out"
            )
        log.warning(
            "%s: %s of shape %s padded for cube %s", source.id, kind, array.shape, self.cube
        )
        return pad_to_cube(array, self.cube, float(array.min())), True


def _loaded_shape(image: MedicalImage, target: tuple[float, ...] | None) -> tuple[int, ...]:
    """The spatial shape of `image` after resampling to `target` mm (when both spacings are known),
    the size `preprocess` is then asked for so that it does not resize."""
    shape = tuple(image.array.shape[1:])
    if (
        target is None
        or image.spatial_dims != 3
        or image.spacing is None
        or len(image.spacing) != 3
    ):
        return shape
    return spacing_shape(shape, image.spacing, target)


def _checked_sizes(name: str, values, length: int, kind=float) -> tuple:
    """`values` as `length` positive numbers of `kind`, else a ConfigError naming the field."""
    try:
        sizes = tuple(kind(v) for v in values)
        exact = all(kind(v) == v for v in values)
    except (TypeError, ValueError):
        sizes, exact = (), False
    if len(sizes) != length or not exact or not all(v > 0 for v in sizes):
        raise ConfigError(f"{name}: {values!r} is not {length} positive {kind.__name__} sizes")
    return sizes
