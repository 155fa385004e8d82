"""Tiles of whole slides: tissue detection on a low-resolution level, a tile grid at a target
resolution, the tiles as a dataset read by DataLoader workers, and a thumbnail to check by eye.

Tissue: the saturation (HSV) of the low-resolution level, thresholded by Otsu (scikit-image; at
least MIN_SATURATION, so a blank slide finds nothing); where that finds no stained colour (a
grayscale slide), the intensity thresholded by Otsu, tissue on the side away from the border's
background, exact black being no data; holes filled and fragments smaller than MIN_FRAGMENT of the
slide removed.

Grid: square tiles of `tile_size` pixels at `mpp` micrometres per pixel, i.e. `tile_size * mpp /
slide.mpp` level-0 pixels a side, stepping by (1 - overlap) of that, from the top-left corner; a
tile is kept when at least `min_tissue` of its footprint is tissue. Tiles are read from the coarsest
pyramid level still at least as fine as `mpp`, then resized (bicubic, antialiased) to `tile_size`.
"""

import dataclasses
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from medfound.data.crops import CropSpec, view_pair
from medfound.data.datasets import epoch_and_index
from medfound.errors import ConfigError, ImageReadError, MedfoundError, skip_message
from medfound.io.image import MedicalImage
from medfound.io.presets import Preset, preprocess, preprocess_native
from medfound.io.slide import MAX_OVERVIEW_SIDE, Slide, check_reader, is_slide, open_slide

log = logging.getLogger(__name__)

THUMBNAIL_SIDE = 2048  # the tissue mask is computed on the most detailed level at most this long
MAX_MASK_SIDE = MAX_OVERVIEW_SIDE  # a slide whose smallest level is longer has no usable pyramid
MAX_GRID = 5_000_000  # tiles of one slide's grid: more means a wrong resolution or tile size
OPEN_SLIDES = 32  # slides a dataset keeps open per process (random tiles jump between slides)
MIN_SATURATION = 0.05
MIN_CONTRAST = 0.1  # grayscale slides: tissue and background differ by at least this much
MIN_FRAGMENT = 1e-4  # share of the slide's area below which a tissue fragment is dropped
TILE_MARK = "#tile="


@dataclass
class TileOptions:
    """The grid: `mpp` micrometres per pixel of a tile, `tile_size` pixels a side, `overlap` in
    [0, 1), `min_tissue` share of tissue to keep a tile; `slide_mpp`, when given, the level-0
    resolution of every slide (over what they state)."""

    mpp: float = 0.5
    tile_size: int = 224
    overlap: float = 0.0
    min_tissue: float = 0.5
    slide_mpp: float | None = None  # overrides what slides state
    reader: str = "auto"  # io/slide.py's SLIDE_READERS; not part of the grid

    def grid(self) -> dict:
        """What makes the tiles: every option but the reader (two readers read the same pixels)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k != "reader"}

    def validate(self) -> None:
        """Refuse impossible values by option name."""
        if self.mpp <= 0:
            raise ConfigError(f"--mpp must be > 0, got {self.mpp}")
        if self.tile_size < 8:
            raise ConfigError(f"--tile-size must be >= 8, got {self.tile_size}")
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"--overlap must lie in [0, 1), got {self.overlap}")
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"--min-tissue must lie in [0, 1], got {self.min_tissue}")
        if self.slide_mpp is not None and self.slide_mpp <= 0:
            raise ConfigError(f"--slide-mpp must be > 0, got {self.slide_mpp}")
        check_reader(self.reader)


@dataclass
class SlideTiles:
    """The tile plan of one slide."""

    slide: Path
    mpp: float  # the slide's level-0 resolution
    level: int  # the level tiles are read from
    read_size: int  # pixels a side read at that level (then resized to tile_size)
    side: int  # level-0 pixels a side
    xy: np.ndarray  # int64 (n, 2): each tile's top-left corner in level-0 pixels
    tissue: np.ndarray  # float (n,): each tile's tissue share
    thumbnail: np.ndarray = field(repr=False)  # RGB uint8 of the low-resolution level
    mask: np.ndarray = field(repr=False)  # bool, the thumbnail's tissue
    thumbnail_downsample: float = 1.0  # level-0 pixels per thumbnail pixel
    count: int = 0  # tiles of the whole plan (xy may be left with only those still to do)
    value_range: tuple[float, float] | None = None  # the slide's, for slides not stored in 8 bits

    def forget_pictures(self) -> None:
        """Drop the thumbnail and mask (megabytes per slide) once the thumbnail is drawn."""
        self.thumbnail = self.mask = np.zeros((0, 0), np.uint8)

    def without(self, done: set[str]) -> "SlideTiles":
        """This plan with the tiles whose ids are in `done` left out (its count kept)."""
        keep = [i for i in range(len(self.xy)) if self.tile_id(i) not in done]
        self.xy, self.tissue = self.xy[keep], self.tissue[keep]
        return self

    def tile_id(self, index: int) -> str:
        """`<slide path>#tile=<x>,<y>`: what outputs and resume use."""
        x, y = self.xy[index]
        return f"{self.slide}{TILE_MARK}{x},{y}"


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Tissue of an RGB uint8 picture (see the module docstring)."""
    from skimage.filters import threshold_otsu

    values = rgb.astype(np.float32)
    high, low = values.max(axis=-1), values.min(axis=-1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0.0)
    level = threshold_otsu(saturation) if np.ptp(saturation) > 0 else 1.0
    mask = _cleaned(saturation > max(float(level), MIN_SATURATION))
    if not mask.any():  # no stained colour: a grayscale slide (JPEG's chroma noise and all)?
        mask = _cleaned(_gray_tissue(values.mean(axis=-1)))
    return mask


def _cleaned(mask: np.ndarray) -> np.ndarray:
    """Holes filled, fragments under MIN_FRAGMENT of the picture removed."""
    from scipy import ndimage
    from skimage.morphology import remove_small_objects

    mask = ndimage.binary_fill_holes(mask)
    return remove_small_objects(mask, max_size=max(1, int(MIN_FRAGMENT * mask.size)))


def _gray_tissue(gray: np.ndarray) -> np.ndarray:
    """Tissue of a grayscale picture: the side of an Otsu threshold on intensity away from the
    background, which the picture's border shows (bright glass in brightfield, dark in
    fluorescence; the larger side when the border holds no data); nothing when the two sides differ
    by less than MIN_CONTRAST of the 8-bit range. Exact black is no data (unscanned padding)."""
    from skimage.filters import threshold_otsu

    data = gray > 0
    values = gray[data]
    if values.size == 0 or np.ptp(values) == 0:
        return np.zeros(gray.shape, bool)
    level = float(threshold_otsu(values))
    bright, dark = values[values > level], values[values <= level]
    if float(bright.mean()) - float(dark.mean()) < MIN_CONTRAST * 255:
        return np.zeros(gray.shape, bool)
    border = np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]])
    border = border[border > 0]
    bright_background = np.median(border) > level if len(border) else len(bright) >= len(dark)
    return data & ((gray <= level) if bright_background else (gray > level))


def plan_tiles(slide: Slide, options: TileOptions) -> SlideTiles:
    """The tiles of `slide` kept by the tissue mask, with where and how to read them."""
    side = max(1, round(options.tile_size * options.mpp / slide.mpp))
    stride = max(1, round(side * (1.0 - options.overlap)))
    wanted = options.mpp / slide.mpp  # level-0 pixels per tile pixel
    level = max(
        (i for i, d in enumerate(slide.level_downsamples) if d <= wanted * (1 + 1e-6)),
        key=lambda i: slide.level_downsamples[i],
        default=0,
    )
    read_size = max(1, round(side / slide.level_downsamples[level]))
    thumb_level = slide.lowest_level(THUMBNAIL_SIDE)
    width, height = slide.level_dimensions[thumb_level]
    if max(width, height) > MAX_MASK_SIDE:
        raise ImageReadError(
            f"{slide.path}: no pyramid level of at most {MAX_MASK_SIDE} px to find the tissue on "
            f"(the smallest is {width} x {height}); save the slide with a pyramid"
        )
    thumbnail = slide.read(thumb_level, 0, 0, width, height)
    mask = tissue_mask(thumbnail)
    scale = slide.dimensions[0] / width  # level-0 pixels per thumbnail pixel
    xs = np.arange(0, slide.dimensions[0] - side + 1, stride)
    ys = np.arange(0, slide.dimensions[1] - side + 1, stride)
    if len(xs) * len(ys) > MAX_GRID:
        raise ImageReadError(
            f"{slide.path}: {len(xs) * len(ys):,} grid cells at {slide.mpp} um per level-0 pixel "
            "(a wrong resolution? give --slide-mpp)"
        )
    grid = np.array([(x, y) for y in ys for x in xs], dtype=np.int64).reshape(-1, 2)
    shares = np.array([_share(mask, x, y, side, scale) for x, y in grid], dtype=np.float64)
    keep = shares >= options.min_tissue
    return SlideTiles(
        slide.path,
        slide.mpp,
        level,
        read_size,
        side,
        grid[keep],
        shares[keep],
        thumbnail,
        mask,
        scale,
        count=int(keep.sum()),
        value_range=slide.value_range,
    )


NO_TISSUE = (
    "no tissue found (neither stained colour nor, on a gray slide, a contrast of 10% from the "
    "background; check the thumbnail, or lower --min-tissue)"
)


def split_slides(sources: list) -> tuple[list, list]:
    """(whole slides, every other source) of image sources, each in order."""
    slides = [s for s in sources if not s.series and is_slide(s.paths[0])]
    ids = {s.id for s in slides}
    return slides, [s for s in sources if s.id not in ids]


def plan_slides(sources: list, options: TileOptions, problems: list, on_plan=None) -> list:
    """Each slide's tile plan (opened, planned on its low-resolution level, closed), its pictures
    dropped after `on_plan(plan)` (drawing the thumbnail, say). Slides that cannot be read or hold
    no tissue are logged, appended to `problems` as (id, reason) and left out."""
    plans = []
    for source in sources:
        try:
            slide = open_slide(source.paths[0], options.slide_mpp, options.reader)
            try:
                plan = plan_tiles(slide, options)
            finally:
                slide.close()
        except MedfoundError as exc:
            log.warning("skipped %s", skip_message(source.id, str(exc)))
            problems.append((source.id, str(exc)))
            continue
        if on_plan is not None:
            on_plan(plan)
        plan.forget_pictures()
        if not plan.count:  # said, not silently left out
            log.warning("skipped %s", skip_message(source.id, NO_TISSUE))
            problems.append((source.id, NO_TISSUE))
            continue
        plans.append(plan)
    return plans


def _share(mask: np.ndarray, x: int, y: int, side: int, scale: float) -> float:
    """The tissue share of the level-0 square (x, y, side) on the thumbnail's mask."""
    x0, y0 = math.floor(x / scale), math.floor(y / scale)
    x1, y1 = max(x0 + 1, math.ceil((x + side) / scale)), max(y0 + 1, math.ceil((y + side) / scale))
    window = mask[y0:y1, x0:x1]
    return float(window.mean()) if window.size else 0.0


def draw_thumbnail(plan: SlideTiles, path: Path) -> None:
    """The low-resolution level with the tissue tinted green and every kept tile outlined."""
    from PIL import Image, ImageDraw

    from medfound.files import atomic_write

    picture = plan.thumbnail.astype(np.float32)
    picture[plan.mask] = 0.6 * picture[plan.mask] + 0.4 * np.array([0, 200, 0])
    image = Image.fromarray(picture.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for x, y in plan.xy:
        box = [c / plan.thumbnail_downsample for c in (x, y, x + plan.side, y + plan.side)]
        draw.rectangle(box, outline=(30, 60, 220))
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


def read_tile(slide: Slide, plan: SlideTiles, index: int, tile_size: int) -> np.ndarray:
    """Tile `index` of `plan` as RGB uint8 (tile_size, tile_size, 3)."""
    x, y = (int(v) for v in plan.xy[index])
    rgb = slide.read(plan.level, x, y, plan.read_size, plan.read_size)
    if plan.read_size == tile_size:
        return rgb
    tile = torch.from_numpy(rgb).permute(2, 0, 1).float()[None]
    tile = torch.nn.functional.interpolate(
        tile, size=(tile_size, tile_size), mode="bicubic", antialias=True, align_corners=False
    )
    return tile[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy()


class SlideTileDataset(Dataset):
    """The tiles of planned slides, read in the workers (each opens its slides once): items as
    data.ImageDataset makes them, plus `tile` = {slide, level, x, y, tile_mpp, tile_count}; an
    unreadable tile is an error item naming it, and the rest of its slide goes on."""

    def __init__(self, plans: list[SlideTiles], preset: Preset, options: TileOptions, **shape):
        self.plans, self.preset, self.options, self.shape = plans, preset, options, shape
        self.starts = np.cumsum([0] + [len(plan.xy) for plan in plans])  # tile i: plan by bisection
        self._open: dict[Path, Slide] = {}  # the last OPEN_SLIDES slides read, oldest first
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        # open files do not travel to workers: each process opens its own
        return {**self.__dict__, "_open": {}}

    def __len__(self) -> int:
        return int(self.starts[-1])

    def _slide(self, plan: SlideTiles) -> Slide:
        if self._pid != os.getpid():  # a forked worker: the parent's handles share file positions
            self._open, self._pid = {}, os.getpid()
        slide = self._open.pop(plan.slide, None) or open_slide(
            plan.slide, self.options.slide_mpp, self.options.reader, plan.value_range
        )
        self._open[plan.slide] = slide
        while len(self._open) > OPEN_SLIDES:  # thousands of slides: never thousands of files open
            self._open.pop(next(iter(self._open))).close()
        return slide

    def __getitem__(self, index: int) -> dict:
        p = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self._tile_item(index, p, index - int(self.starts[p]))

    def _tile_item(self, index: int, p: int, t: int, views=None) -> dict:
        """Tile t of plan p; with `views` ((CropSpec, rng)), a pair of crops cut from the tile as
        read from its level (data/crops.py) instead of the tile."""
        plan = self.plans[p]
        tile_id = plan.tile_id(t)
        x, y = (int(v) for v in plan.xy[t])
        try:
            size = plan.read_size if views is not None else self.options.tile_size
            pixels = np.moveaxis(read_tile(self._slide(plan), plan, t, size), -1, 0)
            image = MedicalImage(pixels.astype(np.float32), tile_id, value_range=(0.0, 255.0))
            if views is not None:
                native = preprocess_native(image, self.preset, channels=self.shape["channels"])
                tensor = view_pair(native, native, views[1], views[0])
            else:
                tensor = preprocess(image, self.preset, **self.shape)
        except MedfoundError as exc:
            return {"index": index, "source": tile_id, "error": str(exc)}
        except Exception as exc:  # one odd tile must not end the run
            return {"index": index, "source": tile_id, "error": f"{type(exc).__name__}: {exc}"}
        return {
            "index": index,
            "source": tile_id,
            "source_id": tile_id,
            "tensor": tensor,
            "modality": "SM",  # DICOM's code for slide microscopy
            "preset": self.preset.name,
            "tile": {
                "slide": str(plan.slide),
                "level": plan.level,
                "x": x,
                "y": y,
                "tile_mpp": self.options.mpp,
                "tile_count": plan.count,
            },
        }


class RandomSlideTiles(SlideTileDataset):
    """For pretraining: `per_slide` visits per slide and epoch, each a tissue tile drawn at random
    by (seed, epoch, index) (the engine's sampler passes those keys), so thousands of slides train
    without a tile dump, every epoch sees other tiles, and a resumed run draws the same ones."""

    keyed_by_epoch = True

    def __init__(
        self,
        plans,
        preset,
        options,
        *,
        per_slide: int,
        seed: int = 0,
        views: CropSpec | None = None,
        **shape,
    ):
        """`views`: items are pairs of crops of the tile (data/crops.py), a `group` of 2."""
        plans = [plan for plan in plans if len(plan.xy)]  # a slide without tissue gives nothing
        super().__init__(plans, preset, options, **shape)
        self.per_slide, self.seed, self.views = per_slide, seed, views

    def __len__(self) -> int:
        return len(self.plans) * self.per_slide

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        epoch, index = epoch_and_index(key)
        p = index // self.per_slide
        rng = np.random.default_rng([self.seed, epoch, index])
        t = int(rng.integers(len(self.plans[p].xy)))
        if self.views is None:
            return self._tile_item(index, p, t)
        item = self._tile_item(index, p, t, (self.views, rng))
        return item if "error" in item else item | {"group": True}
