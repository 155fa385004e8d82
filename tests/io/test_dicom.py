import numpy as np
import pytest

from medfound.errors import ImageReadError
from medfound.io import read_image
from medfound.io.dicom import read_dicom_series, uneven_slice_steps
from tests.factories import PHI, write_dicom


def test_ct_rescale_gives_hounsfield_units(tmp_path):
    stored = np.array([[0, 1024], [2024, 3024]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "ct.dcm", stored, RescaleSlope=1, RescaleIntercept=-1024, PixelSpacing=[0.7, 0.8]
    )
    image = read_image(path)
    np.testing.assert_array_equal(image.array[0], [[-1024, 0], [1000, 2000]])
    assert image.modality == "CT"
    assert image.spacing == (0.7, 0.8)
    assert image.value_range is None  # CT is windowed by the preset, not by the file


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 4095]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "m1.dcm", stored, modality="CR", photometric="MONOCHROME1", bits=12
    )
    image = read_image(path)
    assert image.value_range == (0.0, 4095.0)
    np.testing.assert_array_equal(image.array[0], [[4095, 0]])


def test_radiograph_window_is_applied(tmp_path):
    stored = np.array([[0, 1000, 2000, 3000, 4000]], dtype=np.uint16)
    path = write_dicom(
        tmp_path / "dx.dcm", stored, modality="DX", bits=12, WindowCenter=2000, WindowWidth=2000
    )
    values = read_image(path).array[0, 0]
    # below the window -> black, above -> white, the centre -> mid-grey, monotonic between
    assert values[0] == values[1] == 0.0
    assert values[-1] == 4095.0
    assert np.all(np.diff(values) >= 0)
    assert abs(values[2] - 4095 / 2) < 4095 * 0.01


def test_multiframe_dicom_without_positions_is_columns_rows_frames(tmp_path):
    frames = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5)
    path = write_dicom(
        tmp_path / "mf.dcm", frames, modality="MR", PixelSpacing=[0.6, 0.9], SliceThickness=2.5
    )
    image = read_image(path)
    assert image.array.shape == (1, 5, 4, 3)  # (columns, rows, frames): DICOM's (i, j, k)
    assert image.spacing == (0.9, 0.6, 2.5)  # PixelSpacing is (row spacing, column spacing)
    assert image.affine is None  # nothing says where the frames lie
    np.testing.assert_array_equal(image.array[0, :, :, 1], frames[1].T)


def test_series_is_stacked_along_the_slice_normal(tmp_path):
    from pydicom.uid import generate_uid

    series = generate_uid()
    paths = []
    for i, z in enumerate([5.0, -5.0, 0.0]):  # written out of order
        paths.append(
            write_dicom(
                tmp_path / f"s{i}.dcm",
                np.full((4, 4), 100 * (i + 1), np.uint16),
                SeriesInstanceUID=series,
                ImagePositionPatient=[0, 0, z],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                PixelSpacing=[0.5, 0.5],
                RescaleSlope=1,
                RescaleIntercept=0,
            )
        )
    image = read_dicom_series(paths, "series")
    assert image.array.shape == (1, 4, 4, 3)
    assert image.array[0, 0, 0].tolist() == [200, 300, 100]  # z = -5, 0, 5
    assert image.spacing == (0.5, 0.5, 5.0)
    # voxel 0 is the most left, posterior one: the last column and row of the first slice
    np.testing.assert_allclose(image.affine[:3, 3], [-1.5, -1.5, -5.0])


def _unpositioned_series(folder, **attributes):
    from pydicom.uid import generate_uid

    series, paths = generate_uid(), []
    for n in (3, 1, 2):  # written out of order; InstanceNumber is the only order there is
        pixels = np.arange(6, dtype=np.uint16).reshape(2, 3) + 10 * n
        paths.append(
            write_dicom(
                folder / f"u{n}.dcm",
                pixels,
                SeriesInstanceUID=series,
                InstanceNumber=n,
                **attributes,
            )
        )
    return paths


def test_series_without_positions_is_columns_rows_slices(tmp_path):
    paths = _unpositioned_series(tmp_path, PixelSpacing=[0.6, 0.9], SliceThickness=3.0)
    image = read_dicom_series(paths, "series")
    assert image.array.shape == (1, 3, 2, 3)
    assert image.affine is None
    assert image.spacing == (0.9, 0.6, 3.0)
    np.testing.assert_array_equal(image.array[0, :, :, 0], (np.arange(6).reshape(2, 3) + 10).T)
    assert image.array[0, 0, 0].tolist() == [10, 20, 30]


def test_series_without_slice_gap_has_no_spacing(tmp_path):
    image = read_dicom_series(_unpositioned_series(tmp_path, PixelSpacing=[1, 1]), "series")
    assert image.spacing is None  # InstanceNumber gaps are not millimetres


def test_series_of_mixed_orientations_is_refused(tmp_path):
    from pydicom.uid import generate_uid

    series, paths = generate_uid(), []
    for i, orientation in enumerate(([1, 0, 0, 0, 1, 0], [1, 0, 0, 0, 0, -1])):
        paths.append(
            write_dicom(
                tmp_path / f"o{i}.dcm",
                np.zeros((4, 4), np.uint16),
                SeriesInstanceUID=series,
                ImagePositionPatient=[0, 0, float(i)],
                ImageOrientationPatient=orientation,
                PixelSpacing=[1, 1],
            )
        )
    with pytest.raises(ImageReadError, match=r"scout: slices .* differ in ImageOrientationPatient"):
        read_dicom_series(paths, "scout")


def test_no_patient_attribute_in_metadata(tmp_path):
    image = read_image(write_dicom(tmp_path / "p.dcm", np.zeros((4, 4), np.uint16)))
    text = repr(image.meta) + image.source_id
    for value in PHI.values():
        assert value not in text
    assert "#" in image.source_id  # identified by path + SOPInstanceUID


def test_text_file_named_dcm(tmp_path):
    (tmp_path / "fake.dcm").write_text("this is not dicom\n" * 20)
    with pytest.raises(ImageReadError, match=r"fake\.dcm: not a DICOM file"):
        read_image(tmp_path / "fake.dcm")


def test_compressed_data_no_decoder_can_read_names_the_syntax_and_the_decoders(tmp_path):
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEG2000Lossless

    path = write_dicom(tmp_path / "j2k.dcm", np.zeros((4, 4), np.uint16))
    import pydicom

    ds = pydicom.dcmread(path)
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless
    ds.PixelData = encapsulate([b"\xff\x4f\xff\x51" + b"\0" * 30])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(ImageReadError, match=r"JPEG 2000.*could not be decoded.*pylibjpeg"):
        read_image(path)


def _axial_series(folder, heights):
    from pydicom.uid import generate_uid

    series = generate_uid()
    return [
        write_dicom(
            folder / f"z{i}.dcm",
            np.full((4, 4), i, np.uint16),
            SeriesInstanceUID=series,
            ImagePositionPatient=[0, 0, float(z)],
            ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
            PixelSpacing=[1, 1],
        )
        for i, z in enumerate(heights)
    ]


def test_slices_sharing_a_position_are_not_one_volume(tmp_path):
    paths = _axial_series(tmp_path, [0, 2, 2, 4])  # two echoes of the middle slice, say
    with pytest.raises(ImageReadError, match=r"echo: 2 slices share a position"):
        read_dicom_series(paths, "echo")


def test_a_missing_slice_is_said_and_the_mean_step_used(tmp_path, caplog):
    paths = _axial_series(tmp_path, [0, 2, 4, 8])
    image = read_dicom_series(paths, "gap")
    assert "gap: uneven slice steps (2 to 4 mm)" in caplog.text
    assert image.spacing[2] == pytest.approx(8 / 3)
    assert uneven_slice_steps(paths) == (2.0, 4.0)


def test_even_slice_steps_pass_the_header_check(tmp_path):
    assert uneven_slice_steps(_axial_series(tmp_path, [0, 2.5, 5, 7.5])) is None


def _item(**attributes):
    from pydicom.dataset import Dataset

    item = Dataset()
    for key, value in attributes.items():
        setattr(item, key, value)
    return item


def test_enhanced_multiframe_rescale_is_applied_frame_by_frame(tmp_path):
    from pydicom.sequence import Sequence

    intercepts = [-1024.0, -1000.0, 0.0]
    per_frame = [
        _item(
            PixelValueTransformationSequence=Sequence(
                [_item(RescaleSlope=2.0, RescaleIntercept=b, RescaleType="HU")]
            )
        )
        for b in intercepts
    ]
    path = write_dicom(
        tmp_path / "enhanced.dcm",
        np.full((3, 4, 5), 1000, np.uint16),
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    image = read_image(path)
    assert image.array.shape == (1, 5, 4, 3)  # (columns, rows, frames): no positions given
    for k, b in enumerate(intercepts):
        np.testing.assert_array_equal(image.array[0, ..., k], 2.0 * 1000 + b)


def test_enhanced_multiframe_windows_are_applied_frame_by_frame_for_radiographs(tmp_path):
    from pydicom.sequence import Sequence

    shared = _item(
        PixelValueTransformationSequence=Sequence(
            [_item(RescaleSlope=2.0, RescaleIntercept=-1000.0)]
        )
    )
    per_frame = [  # windows in rescaled units: the stored 600 is 2 * 600 - 1000 = 200
        _item(FrameVOILUTSequence=Sequence([_item(WindowCenter=c, WindowWidth=100.0)]))
        for c in (100.0, 500.0)
    ]
    path = write_dicom(
        tmp_path / "xa.dcm",
        np.full((2, 4, 4), 600, np.uint16),
        modality="XA",
        bits=12,
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
        SharedFunctionalGroupsSequence=Sequence([shared]),
    )
    image = read_image(path)
    low, high = image.value_range
    assert (low, high) == (-1000.0, 2 * 4095 - 1000.0)  # the rescaled range of 12 bits
    # 200 is above the first frame's window (white) and below the second's (black); in stored
    # units (600) both frames would be white
    assert image.array[0, ..., 0].min() == high and image.array[0, ..., 1].max() == low


def test_a_dicom_whole_slide_image_or_a_huge_file_is_refused_before_decoding(tmp_path):
    slide = write_dicom(
        tmp_path / "wsi.dcm",
        np.zeros((2, 4, 4), np.uint16),
        SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.6",
    )
    with pytest.raises(ImageReadError, match="whole-slide image"):
        read_image(slide)
    huge = write_dicom(
        tmp_path / "huge.dcm", np.zeros((4, 4), np.uint16), Rows=40000, Columns=40000
    )
    with pytest.raises(ImageReadError, match="too many"):
        read_image(huge)


def test_large_pixel_data_stays_on_disk_until_the_size_checks_pass(tmp_path):
    from medfound.io.dicom import _read_dataset

    big = write_dicom(tmp_path / "big.dcm", np.ones((1024, 1024), np.uint16))
    ds = _read_dataset(big)
    assert ds.get_item("PixelData", keep_deferred=True).value is None  # deferred: 2 MB left on disk
    assert read_image(big).array.shape == (1, 1024, 1024)


def test_a_series_is_checked_from_its_headers_before_any_slice_is_read(tmp_path, monkeypatch):
    from medfound.io import dicom

    paths = [
        write_dicom(tmp_path / f"s{k}.dcm", np.ones((5, 7), np.uint16), InstanceNumber=k)
        for k in range(3)
    ]
    reads = []
    real = dicom._read_dataset
    monkeypatch.setattr(
        dicom,
        "_read_dataset",
        lambda p, header_only=False: reads.append(header_only) or real(p, header_only),
    )
    monkeypatch.setattr(dicom, "_MAX_VALUES", 3 * 5 * 7 - 1)
    with pytest.raises(ImageReadError, match="series-x: 105 pixel values"):
        dicom.read_dicom_series(paths, "series-x")
    assert reads == [True, True, True]  # headers only
    monkeypatch.setattr(dicom, "_MAX_VALUES", 3 * 5 * 7)
    reads.clear()
    assert dicom.read_dicom_series(paths, "series-x").array.shape == (1, 7, 5, 3)
    assert reads == [True] * 3 + [False] * 3
    whole_slide = write_dicom(
        tmp_path / "wsi.dcm",
        np.ones((5, 7), np.uint16),
        SOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.6",
    )
    with pytest.raises(ImageReadError, match="whole-slide image"):
        dicom.read_dicom_series([*paths, whole_slide], "series-x")


def test_frames_rescaled_differently_are_windowed_into_one_range(tmp_path):
    from pydicom.sequence import Sequence

    per_frame = [  # stored 1000: rescaled 1000 and -1000, each at the centre of its window
        _item(
            PixelValueTransformationSequence=Sequence(
                [_item(RescaleSlope=1.0, RescaleIntercept=b)]
            ),
            FrameVOILUTSequence=Sequence([_item(WindowCenter=c, WindowWidth=400.0)]),
        )
        for b, c in ((0.0, 1000.0), (-2000.0, -1000.0))
    ]
    path = write_dicom(
        tmp_path / "two.dcm",
        np.full((2, 4, 4), 1000, np.uint16),
        modality="XA",
        bits=12,
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
    )
    image = read_image(path)
    low, high = image.value_range
    middle = (low + high) / 2
    np.testing.assert_allclose(image.array[0, ..., 0], middle, atol=0.01 * (high - low))
    np.testing.assert_allclose(image.array[0, ..., 1], middle, atol=0.01 * (high - low))


def test_a_single_frame_enhanced_file_uses_its_functional_groups(tmp_path):
    from pydicom.sequence import Sequence

    shared = _item(
        PixelValueTransformationSequence=Sequence(
            [_item(RescaleSlope=1.0, RescaleIntercept=-1024.0)]
        )
    )
    path = write_dicom(
        tmp_path / "one.dcm",
        np.full((4, 4), 1024, np.uint16),
        NumberOfFrames=1,
        PerFrameFunctionalGroupsSequence=Sequence([_item()]),
        SharedFunctionalGroupsSequence=Sequence([shared]),
    )
    np.testing.assert_array_equal(read_image(path).array, 0.0)  # 0 HU, not 1024
