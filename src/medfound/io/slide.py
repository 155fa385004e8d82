"""Whole-slide images (Aperio SVS, Hamamatsu NDPI, Leica SCN, Ventana BIF, Philips and generic
pyramidal TIFF) through tiffslide: pure Python on tifffile, so no system OpenSlide is needed.
Formats outside TIFF (MIRAX .mrxs, Hamamatsu .vms/.vmu, Sakura .svslide) are read through OpenSlide,
an optional extra (`medfound[openslide]`), which can also be chosen for every slide (`reader`).
Regions are read from any pyramid level in level-0 coordinates, always as RGB uint8 (grayscale
repeated, other types scaled, transparent areas white as glass); every failure names the slide
(and the region)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.errors import ConfigError, ImageReadError, MedfoundError

# Suffixes that are always slides; .tif/.tiff are slides when pyramidal (several levels).
OPENSLIDE_ONLY_SUFFIXES = (".mrxs", ".vms", ".vmu", ".svslide")  # not TIFF: tiffslide cannot
SLIDE_SUFFIXES = (".svs", ".ndpi", ".scn", ".bif", *OPENSLIDE_ONLY_SUFFIXES)
SLIDE_READERS = ("auto", "tiffslide", "openslide")
# Stated resolutions outside this range are taken as missing: a generic TIFF tagged 72 dpi says
# 352.8 um per pixel, which would make a tile a pixel wide.
MPP_RANGE = (0.05, 20.0)
TIFF_SUFFIXES = (".tif", ".tiff")
# The longest side of a level read whole (tissue masks, value ranges): a slide whose smallest level
# is longer has no usable pyramid.
MAX_OVERVIEW_SIDE = 8192


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


def slide_companions(path: Path) -> set[Path]:
    """The files a slide is stored in besides `path`: a Hamamatsu .vms names its JPEG parts
    (ImageFile, ImageFile(x,y), MapFile, OptimisationFile) in its INI text; other formats none
    that a folder scan would take for images."""
    if path.suffix.lower() != ".vms":
        return set()
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return set()
    names = set()
    for line in lines:
        key, _, value = line.partition("=")
        key = key.strip().lower()
        if value.strip() and key.startswith(("imagefile", "mapfile", "optimisationfile")):
            names.add((path.parent / value.strip()).resolve())
    return names


@dataclass
class Slide:
    """An open slide: level-0 size, the pyramid, and the level-0 resolution in micrometres/pixel."""

    path: Path
    handle: object  # tiffslide.TiffSlide
    mpp: float
    dimensions: tuple[int, int]  # level 0 (width, height)
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    # the values that become 0 and 255 for slides not stored as 8 bits: one range for the whole
    # slide (from its smallest level), so that every tile of it is scaled alike
    value_range: tuple[float, float] | None = None

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
        return as_rgb8(np.asarray(region), self.value_range)

    def lowest_level(self, max_side: int) -> int:
        """The most detailed level whose longer side is at most `max_side` (else the smallest)."""
        for level, (width, height) in enumerate(self.level_dimensions):
            if max(width, height) <= max_side:
                return level
        return len(self.level_dimensions) - 1

    def close(self) -> None:
        self.handle.close()


def as_rgb8(region: np.ndarray, value_range: tuple[float, float] | None = None) -> np.ndarray:
    """A region as RGB uint8: alpha dropped, grayscale repeated, other types scaled from
    `value_range` (low -> 0, high -> 255; default: the integer type's range, or 0 to the region's
    maximum for floats)."""
    if region.ndim == 2:
        region = region[..., None]
    if region.shape[-1] in (2, 4):  # gray + alpha, RGBA
        region = region[..., :-1]
    if region.shape[-1] == 1:
        region = np.repeat(region, 3, axis=-1)
    if region.dtype != np.uint8:
        if value_range is None:
            integer = region.dtype.kind in "ui"
            value_range = (0.0, np.iinfo(region.dtype).max if integer else float(region.max()))
        low, high = value_range
        scale = 255.0 / max(high - low, 1e-12)
        scaled = (region.astype(np.float32) - low) * scale + 0.5
        region = np.clip(scaled, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(region[..., :3])


class _OpenSlideRegions:
    """An OpenSlide handle that reads regions as arrays, as tiffslide's `as_array=True` does, its
    transparent areas (outside a MIRAX scan's tiles) filled with the slide's background colour
    (`openslide.background-color`; white glass when it states none)."""

    def __init__(self, path: Path):
        openslide = require("openslide", "openslide", f"reading {path.suffix} slides")
        self.handle = openslide.OpenSlide(str(path))
        self.dimensions = self.handle.dimensions
        self.level_dimensions = self.handle.level_dimensions
        self.level_downsamples = self.handle.level_downsamples
        self.properties = {
            "tiffslide.mpp-x": self.handle.properties.get("openslide.mpp-x"),
        }
        self.background = _hex_colour(self.handle.properties.get("openslide.background-color"))

    def read_region(self, xy, level: int, size, as_array: bool = True) -> np.ndarray:
        rgba = np.asarray(self.handle.read_region(xy, level, size))
        alpha = rgba[..., 3:].astype(np.float32) / 255.0
        rgb = rgba[..., :3].astype(np.float32) * alpha + self.background * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)

    def close(self) -> None:
        self.handle.close()


def _hex_colour(text: str | None) -> np.ndarray:
    """RGB of an 'RRGGBB' property (white when absent or malformed)."""
    try:
        return np.array([int(text[i : i + 2], 16) for i in (0, 2, 4)], np.float32)
    except (TypeError, ValueError):
        return np.full(3, 255.0, np.float32)


def check_reader(reader: str) -> None:
    """Refuse a reader name other than SLIDE_READERS'."""
    if reader not in SLIDE_READERS:
        raise ConfigError(f"--slide-reader {reader!r}: choose one of {', '.join(SLIDE_READERS)}")


def _handle(path: Path, reader: str):
    """The slide's reader handle: OpenSlide when asked, or (auto) for the formats only it reads."""
    check_reader(reader)
    if reader == "openslide" or (
        reader == "auto" and path.suffix.lower() in OPENSLIDE_ONLY_SUFFIXES
    ):
        return _OpenSlideRegions(path)
    if path.suffix.lower() in OPENSLIDE_ONLY_SUFFIXES:
        raise ConfigError(
            f"{path}: tiffslide cannot read {path.suffix} slides; use --slide-reader auto or "
            "openslide"
        )
    tiffslide = require("tiffslide", None, "whole-slide images")
    return tiffslide.TiffSlide(str(path))


def open_slide(
    path: str | Path,
    mpp: float | None = None,
    reader: str = "auto",
    value_range: tuple[float, float] | None = None,
) -> Slide:
    """Open `path` with `reader` (auto: tiffslide, or OpenSlide for the formats only it reads);
    `mpp` (micrometres per level-0 pixel), when given, overrides what the file states (a stated
    value outside MPP_RANGE counts as none); `value_range`, the slide's own as found when it was
    first opened (Slide.value_range), spares reading its smallest level again. ImageReadError for
    an unreadable slide, or one without a usable resolution and without `mpp`."""
    path = Path(path)
    try:
        handle = _handle(path, reader)
        dimensions = tuple(handle.dimensions)
        levels = tuple(tuple(d) for d in handle.level_dimensions)
        downsamples = tuple(float(d) for d in handle.level_downsamples)
        stated = handle.properties.get("tiffslide.mpp-x")
        # a cut file can open from its header: one pixel of the smallest level shows it is whole
        corner = np.asarray(handle.read_region((0, 0), len(levels) - 1, (1, 1), as_array=True))
        if (
            value_range is None
            and corner.dtype != np.uint8
            and max(levels[-1]) <= MAX_OVERVIEW_SIDE
        ):
            # one range for the whole slide, from its smallest level
            smallest = np.asarray(
                handle.read_region((0, 0), len(levels) - 1, levels[-1], as_array=True)
            )
            value_range = _value_range(smallest)
    except MedfoundError:  # a missing extra, a reader that cannot read this format: as it says
        raise
    except Exception as exc:
        raise ImageReadError(f"{path}: not a readable slide ({type(exc).__name__}: {exc})") from exc
    stated = float(stated) if stated else None
    if stated is not None and not MPP_RANGE[0] <= stated <= MPP_RANGE[1]:
        stated = None  # a screen resolution tag, not a microscope's
    resolution = mpp or stated  # a given --slide-mpp wins over the file
    if not resolution or resolution <= 0:
        handle.close()
        raise ImageReadError(
            f"{path}: the slide states no usable resolution (micrometres per pixel); give it "
            "with --slide-mpp"
        )
    return Slide(path, handle, resolution, dimensions, levels, downsamples, value_range)


def _value_range(values: np.ndarray) -> tuple[float, float]:
    """From 0 (or the smallest value, when negative) to the 99.9th percentile of the smallest
    level, alpha left out: a 12-bit slide in 16-bit words fills the 8 bits as 12-bit data would,
    black stays black, and one bright artefact does not darken the whole slide. One range for all
    channels keeps the colour balance."""
    if values.ndim == 3 and values.shape[-1] in (2, 4):
        values = values[..., :-1]
    sample = values[::2, ::2].astype(np.float64)  # a quarter of the pixels: plenty for a percentile
    low = min(0.0, float(sample.min()))
    high = float(np.percentile(sample, 99.9))
    return low, max(high, low + 1e-12)
