"""`medfound tile`: coordinates or tile files, thumbnails, resumption per slide, bad slides and tiles."""

import csv

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.data.tiles import TileOptions
from medfound.tasks import tile as tile_module
from medfound.tasks.tile import tile_slides
from tests.factories import write_slide

OPTIONS = TileOptions(mpp=0.5, tile_size=64)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    folder = tmp_path_factory.mktemp("slides")
    return [
        write_slide(folder / "a.tiff"),
        write_slide(folder / "b.tiff", size=1024, tissue=(256, 256, 768, 512)),
    ]


def test_coordinates_of_every_slide_with_a_thumbnail_each(slides, tmp_path):
    out = tmp_path / "tiles.parquet"
    summary = tile_slides(slides, out, OPTIONS)
    table = pq.read_table(out).to_pydict()
    assert summary.tiles == len(table["path"]) == 64 + 8
    b = [i for i, s in enumerate(table["slide"]) if s.endswith("b.tiff")]
    assert {(table["x"][i], table["y"][i]) for i in b} == {
        (x, y) for x in range(256, 768, 128) for y in (256, 384)
    }
    assert set(table["level"]) == {1} and set(table["mpp"]) == {0.5}
    thumbnails = sorted((tmp_path / "tiles.thumbnails").glob("*.png"))
    assert len(thumbnails) == 2
    with Image.open(thumbnails[0]) as picture:
        pixels = np.asarray(picture)
    assert (pixels[..., 2] > 200).any() and (
        pixels[..., 1] > pixels[..., 0] + 40
    ).any()  # grid, tint


def test_tile_files_and_a_corrupt_tile_reported_while_its_slide_goes_on(tmp_path):
    import tifffile

    path = write_slide(
        tmp_path / "c.tiff", size=1024, tissue=(256, 256, 768, 768), compression="jpeg"
    )
    with tifffile.TiffFile(path) as tif:
        page = tif.series[0].levels[1].keyframe  # level 1 (a SubIFD of the first page)
        offset, count = page.dataoffsets[0], page.databytecounts[0]  # level-0 pixels 0-511
    with open(path, "r+b") as fh:
        fh.seek(offset + 2)
        fh.write(b"\xff\xd9" * (count // 4))  # the tile's JPEG stream cut short
    out = tmp_path / "tiles"
    summary = tile_slides([path], out, TileOptions(mpp=0.5, tile_size=32, min_tissue=0.5))
    with open(out / "tiles.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    written = [r for r in rows if r["file"]]
    # 64 tissue tiles of 64 level-0 px; the 4 x 4 of them inside the broken level-1 tile fail
    assert len(rows) == 64 and summary.tiles == len(written) == 48
    assert len(summary.skipped) == 16 and all("#tile=" in s for s, _ in summary.skipped)
    with Image.open(out / written[0]["file"]) as tile:
        assert tile.size == (32, 32)
    assert len(list(out.glob("*/thumbnail.png"))) == 1


def test_a_killed_run_continues_with_the_slides_not_done(slides, tmp_path, monkeypatch):
    real, calls = tile_module.plan_tiles, []

    def dying(slide, options):
        if calls:
            raise KeyboardInterrupt("killed")
        calls.append(slide.path)
        return real(slide, options)

    monkeypatch.setattr(tile_module, "plan_tiles", dying)
    with pytest.raises(KeyboardInterrupt):
        tile_slides(slides, tmp_path / "t.parquet", OPTIONS)
    monkeypatch.setattr(tile_module, "plan_tiles", real)
    again = tile_slides(slides, tmp_path / "t.parquet", OPTIONS)
    assert (again.slides_reused, again.slides_done) == (1, 1)
    assert len(pq.read_table(tmp_path / "t.parquet")) == 64 + 8


def test_cli_reports_a_bad_slide_and_tiles_the_rest(slides, tmp_path):
    bad = tmp_path / "bad.svs"
    bad.write_bytes(b"II*\0" + b"\0" * 100)
    bare = write_slide(tmp_path / "bare.tiff", size=512, tissue=(128, 128, 384, 384), mpp=None)
    result = CliRunner().invoke(
        app,
        [
            "tile",
            str(slides[1]),
            str(bad),
            str(bare),
            "--out",
            str(tmp_path / "t.parquet"),
            "--tile-size",
            "64",
        ],
    )
    assert result.exit_code == 1, result.output
    assert "8 tiles from 1 slides" in result.output
    lines = [line for line in result.output.splitlines() if line.startswith("skipped ")]
    assert len(lines) == 2
    assert "bad.svs: not a readable slide" in lines[0] and "--slide-mpp" in lines[1]


def test_another_grid_into_the_same_output_is_refused(slides, tmp_path):
    from medfound.errors import ConfigError

    tile_slides(slides[1:], tmp_path / "t.parquet", OPTIONS)
    with pytest.raises(ConfigError, match="tiled with other options"):
        tile_slides(slides, tmp_path / "t.parquet", TileOptions(mpp=0.5, tile_size=32))


def test_the_cli_tiles_with_openslide_on_request_and_the_reader_is_not_part_of_the_grid(tmp_path):
    slide = write_slide(tmp_path / "p.tiff", size=512, tissue=(128, 128, 384, 384), subifds=False)
    args = ["tile", str(slide), "--out", str(tmp_path / "t.parquet"), "--tile-size", "64"]
    result = CliRunner().invoke(app, [*args, "--slide-reader", "openslide"])
    assert result.exit_code == 0, result.output
    assert "4 tiles from 1 slides" in result.output
    again = CliRunner().invoke(app, [*args, "--slide-reader", "tiffslide"])  # same grid: reused
    assert again.exit_code == 0 and "(1 done earlier)" in again.output, again.output
    wrong = CliRunner().invoke(app, [*args, "--slide-reader", "vips"])
    assert wrong.exit_code == 2 and "--slide-reader 'vips'" in wrong.output
