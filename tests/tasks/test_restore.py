"""`restore`: whole scans through a Genesis restoration network, checked against MONAI run by hand.

The scans are generated: HU with a gradient per axis (any flip or swap shows) stored with a
permuted, flipped, oblique, anisotropic affine, so the outputs' geometry is checked in world
coordinates, not only by shape. The network is the seeded random-init Genesis U-Net.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import sliding_window_inference
from PIL import Image
from torch import nn

from medfound.data.sources import ImageSource
from medfound.errors import ConfigError, WeightsError
from medfound.io import read_image
from medfound.models import load_model
from medfound.models.card import ModelCard
from medfound.models.foundation import FoundationModel
from medfound.tasks.restore import (
    SUMMARY_FILE,
    display_slice,
    montage_layout,
    montage_slices,
    restore,
)
from medfound.tasks.volume_output import output_names
from tests.factories import write_dicom, write_png

MODEL = "unet3d_genesis.chest_ct"
ROI = (16, 16, 8)
SHAPE = (40, 36, 20)  # no side a multiple of the window's


def _scan(shape, seed=0) -> np.ndarray:
    """HU from below the CT window to above it, rising along each axis at its own rate, plus noise."""
    i, j, k = np.indices(shape)
    noise = np.random.default_rng(seed).normal(0, 40, shape)
    return (-1200 + 45 * i + 20 * j + 70 * k + noise).astype(np.float32)


def _oblique_affine() -> np.ndarray:
    """Array axes (i, j, k) pointing roughly to posterior, right, inferior (not RAS+), rotated 12
    degrees about the superior axis, with anisotropic voxels and an offset."""
    angle = np.deg2rad(12)
    rotation = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    axes = np.array([[0, 1, 0], [-1, 0, 0], [0, 0, -1]]).T  # columns: i -> -y, j -> +x, k -> -z
    affine = np.eye(4)
    affine[:3, :3] = rotation @ axes @ np.diag([0.9, 1.3, 2.5])
    affine[:3, 3] = (31.0, -12.5, 80.0)
    return affine


def _unit_ct(hu: np.ndarray) -> np.ndarray:
    return np.clip((hu + 1000.0) / 2000.0, 0.0, 1.0).astype(np.float32)


def _network():
    return load_model(MODEL, random_init=True).network.eval()


def _monai(network, unit: np.ndarray, roi=ROI) -> np.ndarray:
    """The restoration computed here: MONAI's sliding window with the same blending as restore."""
    with torch.inference_mode():
        out = sliding_window_inference(
            torch.from_numpy(unit)[None, None], roi, 8, network, overlap=0.5, mode="gaussian"
        )
    return out[0, 0].numpy()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run over a good oblique scan, a corrupt NIfTI and a 2D PNG; and the expected arrays."""
    folder = tmp_path_factory.mktemp("restore")
    hu, affine = _scan(SHAPE), _oblique_affine()
    scan = folder / "scan.nii.gz"
    nib.save(nib.Nifti1Image(hu, affine), str(scan))
    corrupt = folder / "corrupt.nii.gz"
    corrupt.write_bytes(b"\x1f\x8b not really gzip, not a NIfTI")
    xray = write_png(folder / "xray.png", np.arange(32 * 32, dtype=np.uint16).reshape(32, 32))
    summary = restore(
        [scan, corrupt, xray], folder / "out", model=MODEL, random_init=True, roi=ROI, batch_size=8
    )
    # What the network sees: the scan in RAS+ order (nibabel's own reorientation), CT-windowed.
    canonical = nib.as_closest_canonical(nib.load(str(scan)))
    unit = _unit_ct(canonical.get_fdata(dtype=np.float32))
    restored = _monai(_network(), unit)
    return SimpleNamespace(
        folder=folder,
        scan=scan,
        corrupt=corrupt,
        xray=xray,
        hu=hu,
        affine=affine,
        summary=summary,
        canonical_affine=canonical.affine,
        unit=unit,
        restored=restored,
    )


def _native_from_canonical(canonical: np.ndarray, canonical_affine, native_affine, shape):
    """Resample-free lookup: for every voxel of the native grid, the canonical voxel at the same
    world position (it must be a whole voxel)."""
    index = np.indices(shape).reshape(3, -1)
    world = native_affine @ np.vstack([index, np.ones(index.shape[1])])
    found = np.linalg.inv(canonical_affine) @ world
    rounded = np.round(found[:3]).astype(int)
    assert np.abs(found[:3] - rounded).max() < 1e-4  # the same voxels, not an interpolation
    return canonical[tuple(rounded)].reshape(shape)


@pytest.mark.slow
def test_outputs_keep_the_inputs_shape_affine_and_header_codes(run):
    source = nib.load(str(run.scan))
    (written,) = run.summary.written
    assert written.source == str(run.scan.resolve())
    for path in (written.restored, written.anomaly):
        out = nib.load(str(path))
        assert out.shape == SHAPE
        np.testing.assert_allclose(out.affine, source.affine, atol=1e-5)
        assert int(out.header["sform_code"]) == int(source.header["sform_code"])
        assert int(out.header["qform_code"]) == int(source.header["qform_code"])
        assert out.get_data_dtype() == np.float32


@pytest.mark.slow
def test_anomaly_is_the_difference_monai_gives_at_the_same_world_positions(run):
    anomaly = nib.load(str(run.summary.written[0].anomaly)).get_fdata(dtype=np.float32)
    expected_canonical = np.abs(run.unit - run.restored)
    expected = _native_from_canonical(expected_canonical, run.canonical_affine, run.affine, SHAPE)
    np.testing.assert_allclose(anomaly, expected, atol=1e-5)
    assert anomaly.max() > 0.05  # a random network restores nothing: the map is not all zeros
    # The native-grid input computed directly equals the canonical one looked up by world position.
    np.testing.assert_allclose(
        _native_from_canonical(run.unit, run.canonical_affine, run.affine, SHAPE),
        _unit_ct(run.hu),
    )


@pytest.mark.slow
def test_restored_ct_is_written_back_in_hu(run):
    (written,) = run.summary.written
    out = nib.load(str(written.restored))
    restored_hu = out.get_fdata(dtype=np.float32)
    expected_unit = _native_from_canonical(run.restored, run.canonical_affine, run.affine, SHAPE)
    np.testing.assert_allclose(restored_hu, -1000.0 + 2000.0 * expected_unit, atol=0.02)
    assert written.restored_units == "HU"
    assert out.header["descrip"].tobytes().decode().startswith("restored, HU")
    assert (
        nib.load(str(written.anomaly)).header["descrip"].tobytes().startswith(b"|input-restored|")
    )


@pytest.mark.slow
def test_unreadable_and_2d_inputs_are_reported_and_skipped(run):
    reasons = dict(run.summary.skipped)
    assert set(reasons) == {str(run.corrupt.resolve()), str(run.xray.resolve())}
    assert "not a readable NIfTI" in reasons[str(run.corrupt.resolve())]
    assert "a 2D image of shape (32, 32)" in reasons[str(run.xray.resolve())]
    assert "restores a 3D volume" in reasons[str(run.xray.resolve())]
    assert not run.summary.ok
    names = sorted(p.name for p in (run.folder / "out").iterdir())
    assert names == [
        SUMMARY_FILE,
        "scan_anomaly.nii.gz",
        "scan_montage.png",
        "scan_restored.nii.gz",
    ]


@pytest.mark.slow
def test_run_record_names_settings_outputs_and_skips(run):
    record = json.loads((run.folder / "out" / SUMMARY_FILE).read_text())
    assert record["model"] == MODEL and record["random_init"] is True
    assert record["roi"] == list(ROI) and record["overlap"] == 0.5 and record["blend"] == "gaussian"
    assert record["preset"]["name"] == "ct"
    assert [w["restored"] for w in record["written"]] == ["scan_restored.nii.gz"]
    assert {s["source"] for s in record["skipped"]} == {s for s, _ in run.summary.skipped}


def test_montage_slices_spread_evenly_inside_the_scan():
    assert montage_slices(20, 3) == [5, 10, 15]
    assert montage_slices(2, 3) == [0, 1]  # a thin scan: fewer, distinct slices
    assert montage_slices(1, 3) == [0]


@pytest.mark.slow
def test_montage_rows_are_input_restored_difference_of_axial_slices(run):
    written = run.summary.written[0]
    picture = Image.open(written.montage)
    assert picture.format == "PNG" and picture.mode == "L"
    slices = montage_slices(run.unit.shape[2], 3)
    # Radiological view of an axial slice: rows from anterior to posterior, columns from the
    # patient's right to left.
    tile = run.unit[::-1, ::-1, slices[0]].T
    assert display_slice(run.unit, slices[0]).shape == tile.shape
    layout = montage_layout(tile.shape, len(slices))
    assert picture.size == layout.size and layout.rows == 3
    pixels = np.asarray(picture)
    rows = (
        (run.unit, 1.0),
        (run.restored, 1.0),
        (np.abs(run.unit - run.restored), written.difference_scale),
    )
    for row, (volume, top) in enumerate(rows):
        for column, k in enumerate(slices):
            left, upper, right, lower = layout.box(row, column)
            shown = pixels[upper:lower, left:right].astype(int)
            expected = np.round(np.clip(volume[::-1, ::-1, k].T / top, 0, 1) * 255)
            expected = np.kron(expected, np.ones((layout.factor, layout.factor)))
            assert np.abs(shown - expected).max() <= 1, (row, column)
    # The three rows show different things (the order above is checked, not only the layout).
    first = [pixels[slice(*layout.box(r, 0)[1::2]), slice(*layout.box(r, 0)[0::2])] for r in (0, 1)]
    assert not np.array_equal(first[0], first[1])


def test_ras_scan_smaller_than_the_window_keeps_its_exact_grid_with_the_mri_preset(tmp_path):
    shape = (12, 10, 6)  # smaller than the window on every axis: MONAI pads and crops back
    affine = np.diag([1.5, 1.5, 3.0, 1.0])
    affine[:3, 3] = (-9.0, 4.0, 20.0)
    hu = _scan(shape, seed=1)
    path = tmp_path / "small.nii"
    nib.save(nib.Nifti1Image(hu, affine), str(path))
    summary = restore(
        [path], tmp_path / "out", model=MODEL, random_init=True, roi=ROI, preset="mri"
    )
    (written,) = summary.written
    restored, anomaly = (nib.load(str(p)) for p in (written.restored, written.anomaly))
    source = nib.load(str(path))
    for out in (restored, anomaly):
        assert out.shape == shape
        np.testing.assert_array_equal(out.affine, source.affine)
    lo, hi = np.percentile(hu, (0.5, 99.5))
    unit = np.clip((hu - lo) / (hi - lo), 0, 1).astype(np.float32)
    expected = _monai(_network(), unit)
    np.testing.assert_allclose(restored.get_fdata(dtype=np.float32), expected, atol=1e-5)
    np.testing.assert_allclose(
        anomaly.get_fdata(dtype=np.float32), np.abs(unit - expected), atol=1e-5
    )
    assert written.restored_units == "[0, 1]"


def test_dicom_series_is_written_on_the_readers_ras_grid(tmp_path):
    from pydicom.uid import generate_uid

    folder = tmp_path / "chest"
    folder.mkdir()
    series = generate_uid()
    rng = np.random.default_rng(2)
    for k in range(6):
        write_dicom(
            folder / f"{k:02d}.dcm",
            rng.integers(0, 2000, (10, 12)).astype(np.uint16),
            SeriesInstanceUID=series,
            InstanceNumber=k + 1,
            ImagePositionPatient=[5.0, -3.0, 2.0 * k],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[0.7, 0.6],
            RescaleSlope=1,
            RescaleIntercept=-1024,
        )
    summary = restore([folder], tmp_path / "out", model=MODEL, random_init=True, roi=(8, 8, 8))
    (written,) = summary.written
    assert written.restored.name == "chest_restored.nii.gz"  # a series is named after its folder
    image = read_image(sorted(folder.iterdir()))
    out = nib.load(str(written.anomaly))
    assert out.shape == image.array.shape[1:]
    np.testing.assert_allclose(out.affine, image.affine, atol=1e-5)
    unit = _unit_ct(image.array[0])
    expected = np.abs(unit - _monai(_network(), unit, roi=(8, 8, 8)))
    np.testing.assert_allclose(out.get_fdata(dtype=np.float32), expected, atol=1e-5)
    assert int(out.header["sform_code"]) == 1  # scanner coordinates


def test_output_names_are_distinct_and_follow_the_inputs():
    def source(path, series=False):
        return ImageSource(path, (Path(path),), series=series)

    sources = [
        source("/a/scan.nii.gz"),
        source("/b/scan.nii.gz"),
        source("/c/scan_2.npy"),
        source("/d/chest/001.dcm", series=True),
        source("/e/chest.nii"),
        source("/f/IM0001"),
    ]
    assert output_names(sources) == ["scan", "scan_2", "scan_2_2", "chest", "chest_2", "IM0001"]


def test_inputs_sharing_a_name_get_separate_outputs(tmp_path):
    paths = []
    for n, folder in enumerate(("a", "b")):
        (tmp_path / folder).mkdir()
        path = tmp_path / folder / "scan.npy"
        np.save(path, _scan((8, 8, 8), seed=n) + 300 * n)
        paths.append(path)
    summary = restore(paths, tmp_path / "out", model=MODEL, random_init=True, roi=(8, 8, 8))
    assert [w.restored.name for w in summary.written] == [
        "scan_restored.nii.gz",
        "scan_2_restored.nii.gz",
    ]
    net = _network()
    for path, written in zip(paths, summary.written, strict=True):
        unit = _unit_ct(np.load(path))
        anomaly = nib.load(str(written.anomaly)).get_fdata(dtype=np.float32)
        np.testing.assert_allclose(anomaly, np.abs(unit - _monai(net, unit, (8, 8, 8))), atol=1e-5)


def _volume(tmp_path, shape=(8, 8, 8)) -> Path:
    path = tmp_path / "v.npy"
    np.save(path, _scan(shape))
    return path


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"random_init": False}, WeightsError, "needs weights"),
        ({"roi": (12, 12, 8)}, ConfigError, "divisible by 8"),
        ({"roi": (8, 8)}, ConfigError, "need 3 positive sizes"),
        ({"overlap": 1.0}, ConfigError, "--overlap"),
        ({"blend": "max"}, ConfigError, "--blend"),
        ({"batch_size": 0}, ConfigError, "--batch-size"),
        ({"preset": "xyz"}, ConfigError, "unknown preset 'xyz'"),
    ],
)
def test_bad_model_or_options_fail_before_anything_is_read_or_written(
    tmp_path, options, error, message
):
    kwargs = {"model": MODEL, "random_init": True, "roi": (8, 8, 8)} | options
    with pytest.raises(error, match=message):
        restore([tmp_path / "missing.npy"], tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_weights_for_another_network_fail_with_the_loaders_message(tmp_path):
    from medfound.models.weights import save_safetensors

    weights = tmp_path / "other.safetensors"
    save_safetensors(nn.Conv3d(1, 2, 3), weights, json.dumps({"architecture": "something-else"}))
    with pytest.raises(WeightsError, match="something-else"):
        restore([_volume(tmp_path)], tmp_path / "out", model=MODEL, weights=weights)


def test_saved_weights_name_their_model_and_are_used(tmp_path):
    from medfound.models.weights import save_safetensors

    model = load_model(MODEL, random_init=True, seed=5)  # not the seed-0 weights of random_init
    weights = tmp_path / "genesis.safetensors"
    save_safetensors(model.network, weights, model.card.to_json())
    summary = restore([_volume(tmp_path)], tmp_path / "out", weights=weights, roi=(8, 8, 8))
    assert summary.model == MODEL and not summary.random_init and summary.weights_sha256
    unit = _unit_ct(np.load(tmp_path / "v.npy"))
    expected = np.abs(unit - _monai(model.network.eval(), unit, (8, 8, 8)))
    anomaly = nib.load(str(summary.written[0].anomaly)).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(anomaly, expected, atol=1e-5)


def test_an_encoder_is_refused_as_a_restoration_network(tmp_path):
    card = load_model(MODEL, random_init=True).card
    encoder = FoundationModel(card, nn.Conv3d(1, 4, 1))
    with pytest.raises(ConfigError, match="not a restoration network"):
        restore([_volume(tmp_path)], tmp_path / "out", model=encoder, roi=(8, 8, 8))


def test_compat_batchnorm_uses_batch_statistics_for_the_run_only(tmp_path):
    unet3d = pytest.importorskip("medfound.models.unet3d")
    if not hasattr(unet3d, "use_batch_statistics"):
        pytest.skip("models.unet3d has no use_batch_statistics")
    model = load_model(MODEL, random_init=True)
    # Two windows of 16x16x8 in one batch: the deepest level has 2x2x1 values per channel and
    # window, enough for batch statistics.
    path = _volume(tmp_path, shape=(24, 16, 8))
    probe = torch.rand(1, 1, 8, 8, 8)
    with torch.inference_mode():
        before = model.network(probe)
    runs = {}
    for compat in (False, True):
        summary = restore(
            [path], tmp_path / f"out{compat}", model=model, roi=ROI, compat_batchnorm=compat
        )
        runs[compat] = nib.load(str(summary.written[0].restored)).get_fdata(dtype=np.float32)
    assert np.abs(runs[True] - runs[False]).max() > 1e-3  # batch statistics change the output
    with torch.inference_mode():
        after = model.network(probe)
    torch.testing.assert_close(after, before)  # eval-mode BatchNorm is back after the run


class _Tiny2D(nn.Module):
    """A 2D 'restoration network' with the Genesis contract: [0, 1] in, sigmoid out, same shape."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        return torch.sigmoid(self.conv(x))


def test_a_2d_restoration_model_restores_2d_images(tmp_path):
    card = ModelCard(
        name="tiny2d",
        family="test",
        architecture="tiny2d",
        modality="X-ray",
        spatial_dims=2,
        in_channels=1,
        input_size=16,
        embedding_dim=1,
        preset="cxr",
        description="test",
    )
    model = FoundationModel(card, _Tiny2D()).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (20, 28), dtype=np.uint8)
    png = write_png(tmp_path / "chest.png", pixels)
    volume = _volume(tmp_path)
    summary = restore([png, volume], tmp_path / "out", model=model)
    (written,) = summary.written
    unit = torch.from_numpy(pixels.astype(np.float32) / 255.0)
    with torch.inference_mode():
        expected = sliding_window_inference(
            unit[None, None], (16, 16), 8, model.network, overlap=0.5, mode="gaussian"
        )[0, 0].numpy()
    restored = nib.load(str(written.restored)).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(restored, expected, atol=1e-5)  # (rows, columns) as read
    assert written.restored_units == "[0, 1]"
    assert "restores a 2D image" in dict(summary.skipped)[str(volume.resolve())]
    picture = Image.open(written.montage)
    assert picture.size == montage_layout((20, 28), 1).size  # one column, three rows


def test_a_loaded_model_and_weights_together_are_refused(tmp_path):
    model = load_model(MODEL, random_init=True)
    with pytest.raises(ConfigError, match="not both"):
        restore([_volume(tmp_path)], tmp_path / "out", model=model, weights=tmp_path / "w.pt")
    assert not (tmp_path / "out").exists()
