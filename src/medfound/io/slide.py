"""Whole-slide images (SVS, NDPI, MRXS, SCN, pyramidal TIFF) through tiffslide: pure Python on
tifffile, so no system OpenSlide is needed. Regions are read from any pyramid level in level-0
coordinates, as OpenSlide does; every failure names the slide (and the region)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.errors import ImageReadError

# Suffixes that are always slides; .tif/.tiff are slides when pyramidal (several levels).
SLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu")
TIFF_SUFFIXES = (".tif", ".tiff")


def is_slide(path: Path) -> bool:
    """A slide format by suffix, or a TIFF with a pyramid (read from its header only)."""
    suffix = path.suffix.lower()
    if suffix in SLIDE_SUFFIXES:
        return True
    if suffix not in TIFF_SUFFIXES:
        return False
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            return len(tif.series[0].levels) > 1
    except Exception:
        return False


@dataclass
class Slide:
    """An open slide: level-0 size, the pyramid, and the level-0 resolution in micrometres/pixel."""

    path: Path
    handle: object  # tiffslide.TiffSlide
    mpp: float
    dimensions: tuple[int, int]  # level 0 (width, height)
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of the region at `level` whose top-left corner is (x, y)
        in level-0 pixels."""
        try:
            region = self.handle.read_region((x, y), level, (width, height), as_array=True)
        except Exception as exc:
            raise ImageReadError(
                f"{self.path}: region x={x} y={y} level={level} unreadable "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        return np.ascontiguousarray(np.asarray(region)[..., :3])

    def lowest_level(self, max_side: int) -> int:
        """The most detailed level whose longer side is at most `max_side` (else the smallest)."""
        for level, (width, height) in enumerate(self.level_dimensions):
            if max(width, height) <= max_side:
                return level
        return len(self.level_dimensions) - 1

    def close(self) -> None:
        self.handle.close()


def open_slide(path: str | Path, mpp: float | None = None) -> Slide:
    """Open `path`; `mpp` (micrometres per level-0 pixel) is used when the file states none.
    ImageReadError for an unreadable slide, or one without resolution and without `mpp`."""
    tiffslide = require("tiffslide", None, "whole-slide images")
    path = Path(path)
    try:
        handle = tiffslide.TiffSlide(str(path))
        dimensions = tuple(handle.dimensions)
        levels = tuple(tuple(d) for d in handle.level_dimensions)
        downsamples = tuple(float(d) for d in handle.level_downsamples)
        stated = handle.properties.get("tiffslide.mpp-x")
        # a cut file can open from its header: one pixel of the smallest level shows it is whole
        handle.read_region((0, 0), len(levels) - 1, (1, 1), as_array=True)
    except Exception as exc:
        raise ImageReadError(f"{path}: not a readable slide ({type(exc).__name__}: {exc})") from exc
    resolution = float(stated) if stated else mpp
    if not resolution or resolution <= 0:
        handle.close()
        raise ImageReadError(
            f"{path}: the slide states no resolution (micrometres per pixel); give it with "
            "--slide-mpp"
        )
    return Slide(path, handle, resolution, dimensions, levels, downsamples)
