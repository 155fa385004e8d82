"""Tiles of whole slides: tissue found, the grid exact, the level chosen, tiles read and resized."""

import numpy as np
import pytest

from medfound.data.tiles import SlideTileDataset, TileOptions, plan_tiles, read_tile, tissue_mask
from medfound.errors import ConfigError, ImageReadError
from medfound.io import get_preset
from medfound.io.slide import is_slide, open_slide
from tests.factories import write_png, write_slide


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("slides") / "s.tiff")


def test_the_tiles_are_exactly_those_on_the_tissue(slide_path):
    slide = open_slide(slide_path)
    assert slide.mpp == pytest.approx(0.25) and slide.level_downsamples == (1.0, 2.0, 4.0)
    plan = plan_tiles(slide, TileOptions(mpp=0.5, tile_size=64))
    # 64 px at 0.5 um = 128 level-0 px at 0.25 um, read from level 1 (0.5 um) at 64 px
    assert (plan.side, plan.level, plan.read_size) == (128, 1, 64)
    expected = {(x, y) for x in range(512, 1536, 128) for y in range(512, 1536, 128)}
    assert {tuple(map(int, xy)) for xy in plan.xy} == expected  # the hole is filled, the speck gone
    assert np.all(plan.tissue == 1.0)


def test_overlap_and_a_finer_target_change_the_grid_and_the_level(slide_path):
    slide = open_slide(slide_path)
    fine = plan_tiles(slide, TileOptions(mpp=0.25, tile_size=128, overlap=0.5))
    assert (fine.side, fine.level, fine.read_size) == (128, 0, 128)
    xs = sorted({int(x) for x, _ in fine.xy})
    assert xs[0] == 448 and np.all(np.diff(xs) == 64)  # 448: half on the tissue, min_tissue 0.5
    coarse = plan_tiles(slide, TileOptions(mpp=1.5, tile_size=32))  # coarser than every level
    assert coarse.level == 2 and coarse.read_size == round(192 / 4)


def test_a_tile_is_the_slide_region_at_its_level(slide_path):
    slide = open_slide(slide_path)
    plan = plan_tiles(slide, TileOptions(mpp=0.5, tile_size=64))
    x, y = (int(v) for v in plan.xy[0])
    tile = read_tile(slide, plan, 0, 64)
    np.testing.assert_array_equal(tile, slide.read(1, x, y, 64, 64))
    resized = read_tile(slide, plan, 0, 32)
    assert resized.shape == (32, 32, 3)
    assert abs(float(resized.mean()) - float(tile.mean())) < 2.0


def test_blank_glass_has_no_tissue():
    glass = np.full((200, 300, 3), 240, np.uint8)
    glass += np.random.default_rng(1).integers(0, 8, glass.shape, dtype=np.uint8)
    assert not tissue_mask(glass).any()


def test_the_dataset_gives_preprocessed_tiles_with_their_place(slide_path):
    slide = open_slide(slide_path)
    options = TileOptions(mpp=0.5, tile_size=64)
    plan = plan_tiles(slide, options)
    dataset = SlideTileDataset(
        [plan], get_preset("path", size=64), options, spatial_dims=2, channels=3, native_size=64
    )
    assert len(dataset) == 64
    item = dataset[5]
    assert item["tensor"].shape == (3, 64, 64)
    assert item["tile"]["level"] == 1 and item["source"].endswith("#tile={},{}".format(*plan.xy[5]))


def test_slides_are_recognised_by_format_not_by_suffix_alone(slide_path, tmp_path):
    assert is_slide(slide_path)
    assert not is_slide(write_png(tmp_path / "flat.tif", np.zeros((8, 8), np.uint8)))


def test_bad_slides_and_options_are_refused_with_the_reason(tmp_path, slide_path):
    cut = tmp_path / "cut.svs"
    cut.write_bytes(slide_path.read_bytes()[:2000])
    with pytest.raises(ImageReadError, match=r"cut\.svs: not a readable slide"):
        open_slide(cut)
    bare = write_slide(tmp_path / "bare.tiff", size=512, tissue=(128, 128, 384, 384), mpp=None)
    with pytest.raises(ImageReadError, match=r"states no usable resolution.*--slide-mpp"):
        open_slide(bare)
    assert open_slide(bare, mpp=0.5).mpp == 0.5
    with pytest.raises(ConfigError, match="--overlap"):
        TileOptions(overlap=1.0).validate()


def test_reading_a_slide_as_one_image_is_refused_with_what_to_do(slide_path):
    from medfound.io import read_image

    with pytest.raises(ImageReadError, match=r"whole-slide image; tile it .*medfound tile"):
        read_image(slide_path)


def test_specks_are_not_tissue_even_when_any_tissue_would_keep_a_tile(slide_path):
    plan = plan_tiles(open_slide(slide_path), TileOptions(mpp=0.5, tile_size=64, min_tissue=0.01))
    assert (0, 0) not in {tuple(map(int, xy)) for xy in plan.xy}  # the speck lies at (40, 40)
    assert len(plan.xy) == 64


def test_gray_and_16_bit_regions_become_rgb_8_bit():
    from medfound.io.slide import as_rgb8

    gray16 = np.array([[[0], [65535]]], dtype=np.uint16)
    np.testing.assert_array_equal(as_rgb8(gray16), [[[0, 0, 0], [255, 255, 255]]])
    rgba = np.zeros((1, 1, 4), np.uint8)
    assert as_rgb8(rgba).shape == (1, 1, 3)


def test_a_screen_resolution_is_no_resolution_and_a_given_one_wins(tmp_path):
    dpi72 = write_slide(tmp_path / "dpi.tiff", size=512, tissue=(128, 128, 384, 384), mpp=352.8)
    with pytest.raises(ImageReadError, match="no usable resolution"):
        open_slide(dpi72)
    assert open_slide(dpi72, mpp=0.25).mpp == 0.25
    other = write_slide(tmp_path / "s.tiff", size=512, tissue=(128, 128, 384, 384), mpp=0.5)
    assert open_slide(other, mpp=0.3).mpp == 0.3


def test_the_dataset_keeps_few_slides_open(tmp_path, monkeypatch):
    from medfound.data import tiles as tiles_module

    options = TileOptions(mpp=0.5, tile_size=64)
    plans = [
        plan_tiles(
            open_slide(write_slide(tmp_path / f"{k}.tiff", size=512, tissue=(0, 0, 512, 512))),
            options,
        )
        for k in range(4)
    ]
    dataset = SlideTileDataset(
        plans, get_preset("path", size=64), options, spatial_dims=2, channels=3, native_size=64
    )
    per_slide = len(plans[0].xy)
    monkeypatch.setattr(tiles_module, "OPEN_SLIDES", 2)
    closed = []
    for index in [*range(0, len(dataset), per_slide), 0]:  # every slide in turn, then the first
        item = dataset[index]
        assert "tensor" in item and item["source"].startswith(str(plans[index // per_slide].slide))
        assert len(dataset._open) <= 2
        closed = [p for p in plans if p.slide not in dataset._open]
    assert len(closed) == 2 and plans[0].slide in dataset._open  # evicted, then opened again


def test_workers_never_share_the_parents_open_slides(slide_path):
    import torch

    from medfound.engine.loader import build_loader

    options = TileOptions(mpp=0.5, tile_size=64)
    plan = plan_tiles(open_slide(slide_path), options)
    dataset = SlideTileDataset(
        [plan], get_preset("path", size=64), options, spatial_dims=2, channels=3, native_size=64
    )
    expected = torch.stack([dataset[i]["tensor"] for i in range(len(dataset))])  # opens it here
    loader = build_loader(dataset, torch.device("cpu"), 2, batch_size=8)
    got = torch.cat([batch["tensor"] for batch in loader])
    assert torch.equal(got, expected)


def test_pretraining_draws_random_tissue_tiles_per_epoch_and_again_the_same(slide_path, tmp_path):
    from medfound.data.datasets import KeyedConcat
    from medfound.data.tiles import RandomSlideTiles

    options = TileOptions(mpp=0.5, tile_size=64)
    plans = [plan_tiles(open_slide(slide_path), options)]
    glass = write_slide(tmp_path / "glass.tiff", size=512, tissue=(0, 0, 0, 0))
    plans.append(plan_tiles(open_slide(glass), options))
    assert not len(plans[1].xy)
    shape = {"spatial_dims": 2, "channels": 3, "native_size": 64}
    tiles = RandomSlideTiles(
        plans, get_preset("path", size=64), options, per_slide=5, seed=1, **shape
    )
    assert len(tiles) == 5 and tiles.keyed_by_epoch  # the slide without tissue gives nothing
    drawn = {epoch: [tiles[(epoch, i)]["source"] for i in range(5)] for epoch in range(4)}
    assert len({s for sources in drawn.values() for s in sources}) > 5  # other tiles each epoch
    assert [tiles[(2, i)]["source"] for i in range(5)] == drawn[2]  # and the same when asked again
    both = KeyedConcat([tiles, tiles])
    assert len(both) == 10 and both[(3, 7)]["source"] == drawn[3][2]


def test_a_grayscale_12_bit_slide_finds_its_tissue_and_reads_every_tile_on_one_scale(tmp_path):
    path = write_slide(tmp_path / "gray.tiff", size=1024, tissue=(256, 256, 768, 768), gray12=True)
    slide = open_slide(path)
    assert slide.value_range[0] == 0 and 3800 < slide.value_range[1] < 4096
    plan = plan_tiles(slide, TileOptions(mpp=0.5, tile_size=64))
    expected = {(x, y) for x in range(256, 768, 128) for y in range(256, 768, 128)}
    assert {tuple(map(int, xy)) for xy in plan.xy} == expected
    # the glass is near white on the 8-bit scale, as in the colour slide; a region holding glass
    # and tissue scales its glass alike: one scale for the whole slide
    glass = slide.read(0, 100, 100, 64, 64)
    wider = slide.read(0, 100, 100, 300, 300)
    assert glass.min() > 220 and wider.min() < 160
    np.testing.assert_array_equal(wider[:64, :64], glass)


def test_a_slide_range_is_found_once_and_carried_by_its_plan(tmp_path, monkeypatch):
    from medfound.io import slide as slide_module

    path = write_slide(tmp_path / "gray.tiff", size=512, tissue=(128, 128, 384, 384), gray12=True)
    found = []
    real = slide_module._value_range
    monkeypatch.setattr(slide_module, "_value_range", lambda v: found.append(1) or real(v))
    options = TileOptions(mpp=0.5, tile_size=64)
    plan = plan_tiles(open_slide(path), options)
    assert len(found) == 1 and plan.value_range is not None
    shape = {"spatial_dims": 2, "channels": 3, "native_size": 64}
    dataset = SlideTileDataset([plan], get_preset("path", size=64), options, **shape)
    first = dataset[0]["tensor"]
    assert len(found) == 1  # the dataset reopened the slide with the plan's range
    assert float(first.mean()) > 0.2  # and scaled it: 12-bit tissue is not near black


def test_gray_tissue_is_found_on_dark_and_on_bright_backgrounds_and_not_on_flat_glass():
    from medfound.data.tiles import tissue_mask

    rng = np.random.default_rng(0)
    picture = rng.integers(230, 240, (100, 100)).astype(np.uint8)
    picture[30:70, 30:70] = rng.integers(90, 140, (40, 40))
    bright_glass = np.repeat(picture[..., None], 3, axis=-1)
    fluorescence = 255 - bright_glass
    for rgb in (bright_glass, fluorescence):
        mask = tissue_mask(rgb)
        assert mask[30:70, 30:70].all() and mask.sum() == 40 * 40
    flat = np.repeat(rng.integers(230, 240, (100, 100)).astype(np.uint8)[..., None], 3, axis=-1)
    assert not tissue_mask(flat).any()
    # gray stored as JPEG RGB: the channels differ by a level or two
    noisy = np.clip(bright_glass.astype(int) + rng.integers(-2, 3, bright_glass.shape), 0, 255)
    mask = tissue_mask(noisy.astype(np.uint8))
    assert mask[30:70, 30:70].all() and mask.sum() == 40 * 40
    # unscanned areas padded with black around bright glass: padding is neither tissue nor glass
    padded = bright_glass.copy()
    padded[:, :15] = padded[:, 85:] = padded[:10] = 0
    mask = tissue_mask(padded)
    assert mask[30:70, 30:70].all() and mask.sum() == 40 * 40


def test_openslide_reads_the_same_plan_and_tiles_as_tiffslide(tmp_path):
    path = write_slide(
        tmp_path / "pages.tiff", size=1024, tissue=(256, 256, 768, 768), subifds=False
    )
    options = TileOptions(mpp=0.5, tile_size=64)
    plans = {}
    for reader in ("tiffslide", "openslide"):
        slide = open_slide(path, reader=reader)
        assert slide.level_downsamples == (1.0, 2.0, 4.0) and slide.mpp == pytest.approx(0.25)
        plans[reader] = (slide, plan_tiles(slide, options))
    (ts, tplan), (os_, oplan) = plans["tiffslide"], plans["openslide"]
    np.testing.assert_array_equal(tplan.xy, oplan.xy)
    for i in (0, len(tplan.xy) // 2, len(tplan.xy) - 1):
        np.testing.assert_array_equal(read_tile(ts, tplan, i, 64), read_tile(os_, oplan, i, 64))
    assert "openslide" not in str(type(ts.handle)).lower()


def test_transparent_openslide_areas_are_white_glass():
    from medfound.io.slide import _OpenSlideRegions

    class Fake:
        def read_region(self, xy, level, size):
            rgba = np.zeros((1, 3, 4), np.uint8)
            rgba[0, 1] = (200, 100, 50, 255)  # scanned
            rgba[0, 2] = (200, 100, 50, 128)  # edge of a scanned tile
            return rgba

    regions = _OpenSlideRegions.__new__(_OpenSlideRegions)
    regions.handle, regions.background = Fake(), np.full(3, 255.0, np.float32)
    out = regions.read_region((0, 0), 0, (3, 1))
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :2], [[255, 255, 255], [200, 100, 50]])
    np.testing.assert_array_equal(out[0, 2], [227, 177, 152])  # 200 * 128/255 + 255 * 127/255
    from medfound.io.slide import _hex_colour

    regions.background = _hex_colour("102030")  # a stated background colour fills instead
    np.testing.assert_array_equal(regions.read_region((0, 0), 0, (3, 1))[0, 0], [16, 32, 48])
    np.testing.assert_array_equal(_hex_colour("zz"), [255, 255, 255])


def test_formats_only_openslide_reads_say_what_to_install_or_choose(tmp_path, monkeypatch):
    from medfound.errors import MissingDependencyError
    from medfound.io import slide as slide_module

    mrxs = tmp_path / "scan.mrxs"
    mrxs.write_bytes(b"not really")
    assert is_slide(mrxs)
    with pytest.raises(ConfigError, match=r"tiffslide cannot read \.mrxs slides"):
        open_slide(mrxs, reader="tiffslide")
    with pytest.raises(ConfigError, match="--slide-reader 'libvips'"):
        open_slide(mrxs, reader="libvips")
    with pytest.raises(ImageReadError, match=r"scan\.mrxs: not a readable slide"):
        open_slide(mrxs)  # OpenSlide is installed here, and this file is no slide

    def missing(module, extra=None, purpose=""):
        raise MissingDependencyError(f"'{module}' is needed for {purpose}: pip install [{extra}]")

    monkeypatch.setattr(slide_module, "require", missing)
    with pytest.raises(MissingDependencyError, match=r"reading \.mrxs slides.*\[openslide\]"):
        open_slide(mrxs)


def test_the_jpeg_parts_of_a_hamamatsu_vms_are_not_images_of_their_own(tmp_path):
    from medfound.data.sources import collect_sources

    (tmp_path / "scan.vms").write_text(
        "[Virtual Microscope Specimen]\nNoLayers=1\nImageFile=scan.jpg\nImageFile(1,0)=scan_1.jpg\n"
        "MapFile=scan_map.jpg\nOptimisationFile=scan.opt\n"
    )
    for name in ("scan.jpg", "scan_1.jpg", "scan_map.jpg", "other.jpg"):
        write_png(tmp_path / name, np.zeros((4, 4), np.uint8))
    sources, _ = collect_sources([tmp_path])
    assert sorted(s.paths[0].name for s in sources) == ["other.jpg", "scan.vms"]
