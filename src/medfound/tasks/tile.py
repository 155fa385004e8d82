"""`medfound tile SLIDE... --out TILES.parquet|DIR`: the tissue tiles of whole slides.

To a `.parquet` OUT: one row per tile (path = `<slide>#tile=<x>,<y>`, slide, level, x, y in level-0
pixels, side in level-0 pixels, mpp of the tile, the slide's own mpp, tissue share), nothing read
but the low-resolution level. To a folder: the tiles themselves as PNG (`<slide>/x<X>_y<Y>.png`)
with `tiles.csv`. Either way a thumbnail per slide with the tissue and the grid drawn over it
(`OUT.thumbnails/` or `<slide>/thumbnail.png`), because tiling is checked by eye.

Resumable per slide: each slide's rows (or folder) are written whole, then renamed into place, so a
killed run continues with the slides not yet done. An unreadable slide is reported and skipped; an
unreadable tile is reported and the rest of its slide is written.
"""

import csv
import hashlib
import json
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from medfound.data.tiles import SlideTiles, TileOptions, draw_thumbnail, plan_tiles, read_tile
from medfound.errors import ConfigError, ImageReadError, skip_message
from medfound.files import atomic_write
from medfound.io.slide import open_slide

log = logging.getLogger(__name__)

OPTIONS_FILE = ".tile-options.json"
COLUMNS = ("path", "slide", "level", "x", "y", "side", "mpp", "slide_mpp", "tissue")


@dataclass
class TileSummary:
    """What a run did."""

    out: Path
    slides_done: int = 0  # tiled by this run
    slides_reused: int = 0  # done by an earlier run
    tiles: int = 0  # written by this run
    skipped: list[tuple[str, str]] = field(default_factory=list)  # slides or tiles, with reasons
    seconds: float = 0.0


def tile_slides(slides: list[str | Path], out: str | Path, options: TileOptions) -> TileSummary:
    """Tile every slide in `slides` into `out` (see the module docstring)."""
    options.validate()
    started = time.perf_counter()
    out = Path(out)
    to_table = out.suffix.lower() == ".parquet"
    parts = out.with_name(out.name + ".parts") if to_table else out
    parts.mkdir(parents=True, exist_ok=True)
    _claim(parts, options)
    summary = TileSummary(out=out)
    for slide_path in (Path(s).resolve() for s in slides):
        done = _part(parts, slide_path, to_table)
        if done.exists():
            summary.slides_reused += 1
            continue
        try:
            slide = open_slide(slide_path, options.slide_mpp, options.reader)
        except ImageReadError as exc:
            log.warning("skipped %s", skip_message(str(slide_path), str(exc)))
            summary.skipped.append((str(slide_path), str(exc)))
            continue
        try:
            plan = plan_tiles(slide, options)
            if to_table:
                draw_thumbnail(plan, thumbnail_path(out, slide_path))
                _write_rows(plan, options, done)  # last: its file marks the slide done
                summary.tiles += len(plan.xy)
            else:
                summary.tiles += _write_tiles(slide, plan, options, done, summary)
        except ImageReadError as exc:  # the low-resolution level itself is unreadable
            log.warning("skipped %s", skip_message(str(slide_path), str(exc)))
            summary.skipped.append((str(slide_path), str(exc)))
            continue
        finally:
            slide.close()
        summary.slides_done += 1
        log.info("%s: %d tiles at level %d", slide_path.name, len(plan.xy), plan.level)
    if to_table:
        _merge(parts, out)
    else:
        _write_index(out)
    summary.seconds = time.perf_counter() - started
    return summary


def _claim(parts: Path, options: TileOptions) -> None:
    """Record the grid's options beside the slides' parts, or refuse other options there: slides
    tiled on two grids must not end up in one output."""
    record = parts / OPTIONS_FILE
    wanted = options.grid()
    if record.is_file():
        found = json.loads(record.read_text())
        if found != wanted:
            raise ConfigError(
                f"{parts} holds slides tiled with other options ({found}); this run asks for "
                f"{wanted}: choose another --out, or remove it"
            )
        return
    text = json.dumps(wanted, sort_keys=True)
    atomic_write(record, lambda tmp: tmp.write_text(text))


def _key(slide: Path) -> str:
    """A folder-safe name unique per slide path: the stem and a hash of the path."""
    return f"{slide.stem}-{hashlib.sha256(str(slide).encode()).hexdigest()[:8]}"


def _part(parts: Path, slide: Path, to_table: bool) -> Path:
    return parts / (f"{_key(slide)}.parquet" if to_table else _key(slide))


def thumbnail_path(out: Path, slide: Path) -> Path:
    """OUT.thumbnails/<slide>.png beside a Parquet OUT (its folder made)."""
    folder = out.with_name(out.name.removesuffix(".parquet") + ".thumbnails")
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{_key(slide)}.png"


def _rows(plan: SlideTiles, options: TileOptions) -> dict[str, list]:
    n = len(plan.xy)
    return {
        "path": [plan.tile_id(i) for i in range(n)],
        "slide": [str(plan.slide)] * n,
        "level": [plan.level] * n,
        "x": plan.xy[:, 0].tolist(),
        "y": plan.xy[:, 1].tolist(),
        "side": [plan.side] * n,
        "mpp": [options.mpp] * n,
        "slide_mpp": [plan.mpp] * n,
        "tissue": plan.tissue.tolist(),
    }


def _write_rows(plan: SlideTiles, options: TileOptions, path: Path) -> None:
    table = pa.Table.from_pydict(_rows(plan, options))
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def _write_tiles(slide, plan: SlideTiles, options: TileOptions, done: Path, summary) -> int:
    """The tiles as PNGs into a `.partial` folder renamed to `done` once the slide is complete."""
    from PIL import Image

    partial = done.with_name(done.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    rows, written = _rows(plan, options), 0
    rows["file"] = []
    for i, (x, y) in enumerate(plan.xy):
        name = f"x{x}_y{y}.png"
        try:
            Image.fromarray(read_tile(slide, plan, i, options.tile_size)).save(partial / name)
        except ImageReadError as exc:
            log.warning("skipped %s", skip_message(plan.tile_id(i), str(exc)))
            summary.skipped.append((plan.tile_id(i), str(exc)))
            name = ""
        rows["file"].append(name)
        written += bool(name)
    with open(partial / "tiles.csv", "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow([*COLUMNS, "file"])
        writer.writerows(zip(*(rows[c] for c in (*COLUMNS, "file")), strict=True))
    draw_thumbnail(plan, partial / "thumbnail.png")
    partial.rename(done)
    return written


def _merge(parts: Path, out: Path) -> None:
    """Every slide's rows into OUT (atomically), in slide order."""
    files = sorted(parts.glob("*.parquet"))
    if not files:
        raise ConfigError(f"no slide could be tiled into {out}")
    table = pa.concat_tables([pq.read_table(f) for f in files])
    atomic_write(out, lambda tmp: pq.write_table(table, tmp))


def _write_index(out: Path) -> None:
    """DIR/tiles.csv: every slide folder's rows (tiles that could not be read have no file)."""
    rows = []
    for csv_path in sorted(out.glob("*/tiles.csv")):
        if csv_path.parent.name.endswith(".partial"):  # a slide cut short, done again next run
            continue
        with open(csv_path, newline="") as fh:
            for row in csv.DictReader(fh):
                if row["file"]:
                    row["file"] = f"{csv_path.parent.name}/{row['file']}"
                rows.append(row)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=[*COLUMNS, "file"])
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(out / "tiles.csv", write)
