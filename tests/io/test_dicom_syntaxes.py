"""Every transfer syntax a clinical export uses decodes with the decoders medfound installs, checked on
pydicom's bundled files (lossless ones equal their uncompressed twin), multi-frame and palette colour,
and files without the DICOM preamble and meta header."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from medfound.errors import ImageReadError
from medfound.io import read_image


def _read(name: str):
    return read_image(Path(get_testdata_file(name)))


def _syntax(name: str) -> str:
    return pydicom.dcmread(
        get_testdata_file(name), stop_before_pixels=True
    ).file_meta.TransferSyntaxUID.name


# (compressed file, its uncompressed twin): the lossless syntaxes give the same values
LOSSLESS = [
    ("MR_small_RLE.dcm", "MR_small.dcm", "RLE Lossless"),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", "JPEG 2000 Image Compression (Lossless Only)"),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", "JPEG-LS Lossless Image Compression"),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "JPEG Lossless, Non-Hierarchical, First-Order"),
]
# lossy syntaxes: decoded, and close to their twin where one exists
LOSSY = [
    ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", "JPEG Baseline (Process 1)"),
    ("JPGExtended.dcm", None, "JPEG Extended (Process 2 and 4)"),  # 12-bit
    ("JPEG2000.dcm", None, "JPEG 2000 Image Compression"),
    ("SC_rgb_jls_lossy_line.dcm", "SC_rgb_rle.dcm", "JPEG-LS Lossy (Near-Lossless)"),
    ("image_dfl.dcm", None, "Deflated Explicit VR Little Endian"),
]


@pytest.mark.parametrize(("name", "twin", "syntax"), LOSSLESS, ids=[c[2] for c in LOSSLESS])
def test_lossless_syntaxes_decode_to_the_uncompressed_values(name, twin, syntax):
    assert _syntax(name).startswith(syntax)
    image, reference = _read(name), _read(twin)
    np.testing.assert_array_equal(image.array, reference.array)


@pytest.mark.parametrize(("name", "twin", "syntax"), LOSSY, ids=[c[2] for c in LOSSY])
def test_lossy_syntaxes_decode(name, twin, syntax):
    assert _syntax(name).startswith(syntax)
    image = _read(name)
    assert image.array.size > 100 and np.ptp(image.array) > 0
    if twin is not None:
        reference = _read(twin).array
        assert image.array.shape == reference.shape
        assert np.abs(image.array - reference).mean() < 0.05 * np.ptp(reference)


@pytest.mark.parametrize(
    ("name", "frames", "bits"),
    [
        ("SC_rgb_rle_2frame.dcm", 2, 8),
        ("SC_rgb_rle_16bit_2frame.dcm", 2, 16),
        ("examples_ybr_color.dcm", 30, 8),
    ],
)
def test_multi_frame_colour_is_a_stack_of_rgb_frames(name, frames, bits):
    image = _read(name)
    ds = pydicom.dcmread(get_testdata_file(name))
    expected = ds.pixel_array  # (frames, rows, cols, 3), YBR converted to RGB by pydicom
    assert image.array.shape == (3, ds.Columns, ds.Rows, frames)
    for k in (0, frames - 1):
        np.testing.assert_array_equal(image.array[..., k], np.transpose(expected[k], (2, 1, 0)))
    assert image.value_range == (0.0, float(2**bits - 1))


def test_palette_colour_is_read_through_its_lookup_table():
    from pydicom.pixels import apply_color_lut

    image = _read("examples_palette.dcm")
    ds = pydicom.dcmread(get_testdata_file("examples_palette.dcm"))
    rgb = apply_color_lut(ds.pixel_array, ds)
    np.testing.assert_array_equal(image.array, np.moveaxis(rgb, -1, 0))
    assert image.value_range == (0.0, 65535.0) and len(np.unique(image.array[0])) > 2


def test_a_file_without_preamble_and_meta_header_is_read_when_it_parses(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.file_meta
    ds.preamble = None
    path = tmp_path / "acr_nema.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    assert path.read_bytes()[128:132] != b"DICM"
    np.testing.assert_array_equal(read_image(path).array, _read("CT_small.dcm").array)


def test_a_headerless_file_that_is_not_an_image_is_refused_with_the_reason():
    with pytest.raises(
        ImageReadError, match=r"no preamble or meta header.*does not parse as a DICOM image"
    ):
        _read("ExplVR_LitEndNoMeta.dcm")  # an RT plan: it parses, but holds no image


def test_a_meta_header_without_transfer_syntax_reads_in_the_encoding_found(tmp_path):
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    del ds.file_meta.TransferSyntaxUID
    path = tmp_path / "no_syntax.dcm"
    ds.save_as(path, implicit_vr=False, little_endian=True, enforce_file_format=False)
    assert "TransferSyntaxUID" not in pydicom.dcmread(path, stop_before_pixels=True).file_meta
    np.testing.assert_array_equal(read_image(path).array, _read("CT_small.dcm").array)


def _headerless_slices(folder, count=3):
    """`count` suffix-less files of one series without preamble or meta header (ACR-NEMA style),
    a slice apart, plus a suffix-less file that is not DICOM."""
    from pydicom.uid import generate_uid

    folder.mkdir()
    series = generate_uid()
    for k in range(count):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        del ds.file_meta
        ds.preamble = None
        ds.SeriesInstanceUID, ds.SOPInstanceUID = series, generate_uid()
        ds.ImagePositionPatient = [0.0, 0.0, 5.0 * k]
        ds.save_as(
            folder / f"IM{k}", implicit_vr=True, little_endian=True, enforce_file_format=False
        )
    (folder / "README").write_bytes(b"\x08\x00 not a dataset at all, though it starts like one")
    return folder


def test_suffix_less_headerless_files_are_found_in_folders_and_grouped_into_their_series(tmp_path):
    from medfound.data.sources import collect_sources

    folder = _headerless_slices(tmp_path / "exam")
    files, _ = collect_sources([folder])
    assert sorted(s.paths[0].name for s in files) == ["IM0", "IM1", "IM2"]
    series, _ = collect_sources([folder], group_series=True)
    assert len(series) == 1 and series[0].series and len(series[0].paths) == 3
    volume = read_image(series[0].target)
    assert volume.array.shape[1:] == (128, 128, 3)
    assert read_image(folder / "IM1").array.shape == (1, 128, 128)
