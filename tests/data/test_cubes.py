"""CubeDataset: cubes from generated NIfTI, DICOM-series, MetaImage and .npy volumes and from PNGs."""

import pickle

import numpy as np
import pytest

import medfound.data.cubes as cubes_module
from medfound.data import CubeDataset
from medfound.data.cubes import crop, draw_cube, foreground_share, pad_to_cube, sample_corner
from medfound.data.sources import ImageSource, collect_sources
from medfound.errors import ConfigError
from medfound.io import get_preset
from tests.factories import write_dicom, write_nifti, write_png

SHAPE = (40, 36, 20)  # X, Y, Z
CUBE = (16, 16, 8)
SPACING = (1.0, 1.0, 2.0)
CT = get_preset("ct")


def _ramp_ct() -> np.ndarray:
    """HU rising along every axis in mm (from -1024, so air below the window is clipped), with
    steps per voxel of 20, 10 and 30 HU; its maximum, 806 HU, lies inside the window."""
    i, j, k = np.indices(SHAPE)
    ct = -1024 + 20 * i * SPACING[0] + 10 * j * SPACING[1] + 15 * k * SPACING[2]
    return ct.astype(np.int16)


def _unit(ct: np.ndarray) -> np.ndarray:
    """The ct preset's mapping: [-1000, 1000] HU -> [0, 1], clipped."""
    return np.clip((ct.astype(np.float64) + 1000) / 2000, 0, 1)


def _write_series(folder, ct):
    """Axial DICOM slices as scanners store them: columns to the left, rows to posterior (LPS)."""
    from pydicom.uid import generate_uid

    folder.mkdir()
    series = generate_uid()
    corner = [-SPACING[0] * (SHAPE[0] - 1), -SPACING[1] * (SHAPE[1] - 1)]  # RAS origin (0, 0, 0)
    for k in range(SHAPE[2]):
        write_dicom(
            folder / f"{k:03d}.dcm",
            (ct[::-1, ::-1, k].T + 1024).astype(np.uint16),
            SeriesInstanceUID=series,
            ImagePositionPatient=[*corner, SPACING[2] * k],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[SPACING[1], SPACING[0]],
            RescaleSlope=1,
            RescaleIntercept=-1024,
        )
    sources, problems = collect_sources([folder], group_series=True)
    assert not problems and len(sources) == 1 and sources[0].series
    return sources[0]


def _write_mhd(path, ct):
    """As LUNA16 ships: identity direction in ITK's LPS, so the array's first two axes flip."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(ct[::-1, ::-1, :].transpose(2, 1, 0)))
    image.SetSpacing(SPACING)
    image.SetOrigin((-SPACING[0] * (SHAPE[0] - 1), -SPACING[1] * (SHAPE[1] - 1), 0.0))
    sitk.WriteImage(image, str(path))
    return ImageSource(str(path), (path,))


@pytest.fixture(scope="module")
def ramp_sources(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ramp")
    ct = _ramp_ct()
    nifti = write_nifti(folder / "ct.nii.gz", ct, spacing=SPACING)
    return ct, {
        "nifti": ImageSource(str(nifti), (nifti,)),
        "dicom-series": _write_series(folder / "series", ct),
        "mhd": _write_mhd(folder / "ct.mhd", ct),
    }


def _npy(path, volume) -> ImageSource:
    np.save(path, volume)
    return ImageSource(str(path), (path,))


FORMATS = ["nifti", "dicom-series", "mhd"]


@pytest.mark.parametrize("kind", FORMATS)
def test_cubes_hold_the_windowed_hounsfield_units(ramp_sources, kind):
    ct, sources = ramp_sources
    dataset = CubeDataset([sources[kind]], CT, cube=CUBE, cubes_per_volume=3, seed=1)
    item = dataset[(0, 0)]
    assert "error" not in item, item.get("error")
    assert item["tensor"].shape == (3, 1, *CUBE) and item["group"] and item["fallbacks"] == 0
    unit = _unit(ct)
    for cube, (x, y, z) in zip(item["tensor"], item["positions"], strict=True):
        expected = unit[x : x + CUBE[0], y : y + CUBE[1], z : z + CUBE[2]]
        np.testing.assert_allclose(cube[0].numpy(), expected, atol=1e-6)
    assert len(set(item["positions"])) == 3


def test_a_known_hounsfield_value_lands_where_the_window_puts_it(tmp_path):
    volume = np.full(CUBE, 250.0, np.float32)
    item = CubeDataset([_npy(tmp_path / "v.npy", volume)], CT, cube=CUBE)[0]
    assert item["tensor"].unique().tolist() == [pytest.approx((250 + 1000) / 2000)]


@pytest.mark.parametrize("kind", FORMATS)
def test_target_spacing_widens_the_field_of_view(ramp_sources, kind):
    """At twice the voxel size a cube spans twice the millimetres: each voxel step of the ramp
    doubles, and the volume has half the voxels along each axis."""
    _, sources = ramp_sources
    native = CubeDataset([sources[kind]], CT, cube=CUBE, seed=3)
    coarse = CubeDataset([sources[kind]], CT, cube=CUBE, seed=3, target_spacing=(2.0, 2.0, 4.0))
    steps = {}
    for name, dataset in (("native", native), ("coarse", coarse)):
        cube = dataset[0]["tensor"][0, 0].numpy()
        steps[name] = [float(np.median(np.diff(cube, axis=a))) for a in range(3)]
    assert steps["native"] == pytest.approx([0.01, 0.005, 0.015], rel=1e-3)
    assert steps["coarse"] == pytest.approx([0.02, 0.01, 0.03], rel=0.02)
    ((volume, _),) = coarse.cache.entries.values()
    assert volume.shape == (1, 20, 18, 10)


def test_same_key_same_cubes_across_instances_and_caches(ramp_sources):
    _, sources = ramp_sources
    source = [sources["nifti"]]

    def make(cache_mb):
        return CubeDataset(source, CT, cube=CUBE, cubes_per_volume=2, seed=5, cache_mb=cache_mb)

    cached, uncached = make(64), make(0)
    first = cached[(3, 0)]
    again = cached[(3, 0)]  # now from the cache
    assert cached.cache.hits == 1
    for other in (again, uncached[(3, 0)], make(64)[(3, 0)]):
        assert other["positions"] == first["positions"]
        assert other["tensor"].equal(first["tensor"])
    assert cached[0]["positions"] == cached[(0, 0)]["positions"]  # an int key is epoch 0
    assert cached[(4, 0)]["positions"] != first["positions"]  # a new epoch, new cubes
    other_seed = CubeDataset(source, CT, cube=CUBE, cubes_per_volume=2, seed=6)
    assert other_seed[(3, 0)]["positions"] != first["positions"]


def test_returned_cubes_do_not_alias_the_cached_volume(tmp_path):
    volume = np.random.default_rng(0).uniform(-1000, 1000, SHAPE).astype(np.float32)
    dataset = CubeDataset([_npy(tmp_path / "v.npy", volume)], CT, cube=CUBE)
    first = dataset[0]
    first["tensor"].zero_()
    assert dataset[0]["tensor"].sum() > 0


def _corner_volume(path) -> ImageSource:
    """Air (-1000 HU, unit 0) everywhere but a block of bone (1000 HU, unit 1) in one corner."""
    volume = np.full(SHAPE, -1000.0, np.float32)
    volume[:20, :18, :10] = 1000.0
    return _npy(path, volume)


def test_foreground_filter_accepts_only_cubes_that_meet_the_fraction(tmp_path):
    source = [_corner_volume(tmp_path / "corner.npy")]
    args = {"cube": CUBE, "cubes_per_volume": 8, "foreground_threshold": 0.5}
    filtered = CubeDataset(source, CT, foreground_fraction=0.5, max_tries=100, **args)
    plain = CubeDataset(source, CT, **args)
    shares = {}
    for name, dataset in (("filtered", filtered), ("plain", plain)):
        items = [dataset[(epoch, 0)] for epoch in range(4)]
        assert all(item["fallbacks"] == 0 for item in items)
        shares[name] = [
            foreground_share(cube.numpy(), 0.5) for item in items for cube in item["tensor"]
        ]
    assert min(shares["filtered"]) >= 0.5
    assert min(shares["plain"]) < 0.5  # the filter did the work, not luck


def test_no_foreground_records_fallbacks_and_says_so_once(tmp_path, caplog):
    source = [_npy(tmp_path / "air.npy", np.full(SHAPE, -1000.0, np.float32))]
    dataset = CubeDataset(
        source, CT, cube=CUBE, cubes_per_volume=3, foreground_fraction=0.1, max_tries=4
    )
    item = dataset[0]
    assert item["fallbacks"] == 3 and item["tensor"].shape == (3, 1, *CUBE)
    dataset[(1, 0)]
    warnings = [r.getMessage() for r in caplog.records if "foreground filter" in r.getMessage()]
    assert len(warnings) == 1 and "air.npy: 3 of 3 cubes" in warnings[0]


def test_draw_cube_falls_back_to_the_best_draw():
    array = np.zeros((1, 12, 12, 8), np.float32)
    array[0, :4, :4, :] = 1.0
    cube = (4, 4, 8)
    corner, passed = draw_cube(np.random.default_rng(0), array, cube, 0.5, 1.0, max_tries=3)
    rng, shares = np.random.default_rng(0), []  # the same three draws, scored here
    for _ in range(3):
        c = sample_corner(rng, (12, 12, 8), cube)
        shares.append(foreground_share(array[0, c[0] : c[0] + 4, c[1] : c[1] + 4], 0.5))
    assert not passed and 0 < max(shares) < 1
    assert foreground_share(crop(array, corner, cube), 0.5) == max(shares)


def _small_volume(path) -> ImageSource:
    """10 voxels along X, fewer than the cube's 16; HU in [-500, 500] so its minimum is 0.25."""
    volume = np.random.default_rng(2).uniform(-500, 500, (10, 36, 20)).astype(np.float32)
    volume[0, 0, 0] = -500.0
    return _npy(path, volume)


def test_small_volume_is_padded_with_its_minimum(tmp_path):
    source = _small_volume(tmp_path / "small.npy")
    item = CubeDataset([source], CT, cube=CUBE, cubes_per_volume=2)[0]
    assert item["padded"] and item["tensor"].shape == (2, 1, *CUBE)
    for cube, (x, _, _) in zip(item["tensor"], item["positions"], strict=True):
        assert x == 0  # the padded X axis is exactly the cube's size
        np.testing.assert_allclose(cube[0, :3].numpy(), 0.25)  # 3 padded columns before...
        np.testing.assert_allclose(cube[0, 13:].numpy(), 0.25)  # ...and 3 after
        assert cube[0, 3:13].min() >= 0.25 and cube[0, 3:13].std() > 0.05


def test_small_volume_is_refused_by_option(tmp_path):
    source = _small_volume(tmp_path / "small.npy")
    item = CubeDataset([source], CT, cube=CUBE, small="refuse")[0]
    assert set(item) == {"index", "source", "error"}
    assert source.id in item["error"]
    assert "(10, 36, 20)" in item["error"] and "(16, 16, 8)" in item["error"]


def test_bad_files_are_error_items_and_the_rest_still_read(tmp_path):
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 400)
    png = write_png(tmp_path / "flat.png", np.zeros((40, 36), np.uint8))
    good = _npy(tmp_path / "good.npy", np.zeros(SHAPE, np.float32))
    sources = [ImageSource(str(tmp_path / "bad.nii"), (tmp_path / "bad.nii",)), good]
    sources.append(ImageSource(str(png), (png,)))
    dataset = CubeDataset(sources, CT, cube=CUBE)
    bad, ok, flat = dataset[0], dataset[1], dataset[2]
    assert "bad.nii: not a readable NIfTI" in bad["error"] and bad["source"] == sources[0].id
    assert "tensor" in ok and "error" not in ok
    assert "a 2D image (shape (40, 36)) where a volume is needed" in flat["error"]
    assert flat["error"].startswith(str(png))


def test_the_cache_is_bounded_and_saves_reads(tmp_path, monkeypatch):
    reads = []
    real = cubes_module.read_image

    def counting(target, **kwargs):
        reads.append(target)
        return real(target, **kwargs)

    monkeypatch.setattr(cubes_module, "read_image", counting)
    volume = np.zeros(SHAPE, np.float32)  # 40*36*20 float32: 115,200 bytes after loading
    sources = [_npy(tmp_path / f"v{i}.npy", volume) for i in range(3)]
    roomy = CubeDataset(sources, CT, cube=CUBE, cache_mb=1)
    for epoch in range(3):
        for index in range(3):
            assert "error" not in roomy[(epoch, index)]
    assert len(reads) == 3 and roomy.cache.hits == 6 and roomy.cache.evictions == 0

    reads.clear()
    tight = CubeDataset(sources, CT, cube=CUBE, cache_mb=0.25)  # room for two volumes
    for epoch in range(2):
        for index in range(3):
            tight[(epoch, index)]
            assert tight.cache.bytes <= tight.cache.max_bytes
    assert len(tight.cache.entries) == 2 and tight.cache.evictions > 0
    assert len(reads) == 6  # cycling over three with room for two: every read misses

    reads.clear()
    off = CubeDataset(sources[:1], CT, cube=CUBE, cache_mb=0)
    off[0]
    off[0]
    assert len(reads) == 2 and not off.cache.entries


def test_a_cache_too_small_for_one_volume_is_reported_once(tmp_path, caplog):
    sources = [_npy(tmp_path / f"v{i}.npy", np.zeros(SHAPE, np.float32)) for i in range(2)]
    dataset = CubeDataset(sources, CT, cube=CUBE, cache_mb=0.05)  # 0.11 MB a volume
    for key in [0, 1, 0]:
        assert "error" not in dataset[key]
    warnings = [r for r in caplog.records if "larger than the cube cache" in r.getMessage()]
    assert len(warnings) == 1 and not dataset.cache.entries


def test_pickling_leaves_the_cache_behind(tmp_path):
    dataset = CubeDataset([_npy(tmp_path / "v.npy", np.zeros(SHAPE))], CT, cube=CUBE)
    first = dataset[0]
    copy = pickle.loads(pickle.dumps(dataset))
    assert dataset.cache.entries and not copy.cache.entries
    assert copy[0]["positions"] == first["positions"]


def test_2d_crops_of_a_png(tmp_path):
    image = np.random.default_rng(4).integers(0, 256, (40, 36), dtype=np.uint8)
    png = write_png(tmp_path / "cxr.png", image)
    dataset = CubeDataset(
        [ImageSource(str(png), (png,))],
        get_preset("cxr"),
        cube=(16, 12),
        cubes_per_volume=3,
        dims=2,
    )
    item = dataset[(1, 0)]
    assert item["tensor"].shape == (3, 1, 16, 12)
    for patch, (r, c) in zip(item["tensor"], item["positions"], strict=True):
        np.testing.assert_allclose(patch[0].numpy(), image[r : r + 16, c : c + 12] / 255, atol=1e-6)


def test_2d_crops_of_axial_slices_of_a_volume(ramp_sources):
    ct, sources = ramp_sources
    dataset = CubeDataset([sources["mhd"]], CT, cube=(16, 16), cubes_per_volume=4, dims=2, seed=2)
    item = dataset[0]
    assert item["tensor"].shape == (4, 1, 16, 16)
    unit = _unit(ct)
    for patch, (x, y, z) in zip(item["tensor"], item["positions"], strict=True):
        np.testing.assert_allclose(patch[0].numpy(), unit[x : x + 16, y : y + 16, z], atol=1e-6)
    assert len({z for _, _, z in item["positions"]}) > 1


def test_pad_to_cube_centres_and_keeps_extra_axes():
    array = np.ones((1, 3, 20, 5), np.float32)
    padded = pad_to_cube(array, (6, 4), 0.0)  # a 2D cube: the slice axis is left alone
    assert padded.shape == (1, 6, 20, 5)
    assert padded[0, :, 0, 0].tolist() == [0, 1, 1, 1, 0, 0]


def test_attributes_the_engine_reads(tmp_path):
    dataset = CubeDataset([], CT, cube=CUBE, cubes_per_volume=6)
    assert CubeDataset.keyed_by_epoch and dataset.samples_per_item == 6 and len(dataset) == 0


@pytest.mark.parametrize(
    ("option", "value", "field"),
    [
        ("cube", (16, 16), "cube"),
        ("cube", (16, 0, 8), "cube"),
        ("cube", (16, 16.5, 8), "cube"),
        ("cubes_per_volume", 0, "cubes_per_volume"),
        ("foreground_fraction", 1.5, "foreground_fraction"),
        ("foreground_threshold", -0.1, "foreground_threshold"),
        ("small", "crop", "small"),
        ("target_spacing", (1.0, -1.0, 1.0), "target_spacing"),
        ("dims", 4, "dims"),
        ("seed", -1, "seed"),
        ("max_tries", 0, "max_tries"),
    ],
)
def test_bad_options_are_named(option, value, field):
    with pytest.raises(ConfigError, match=field):
        CubeDataset([], CT, **{"cube": CUBE, option: value})
