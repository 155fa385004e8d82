"""MetaImage (.mhd/.raw, .mha): one scan stored with several ITK directions reads as its RAS truth, and
as the NIfTI that ITK itself writes from the same image."""

import nibabel as nib
import numpy as np
import pytest

from medfound.data.sources import collect_sources
from medfound.errors import ImageReadError
from medfound.io import read_image
from medfound.io.readers import is_supported
from tests.factories import asymmetric_ct, axis_aligned_affine

SHAPE = (10, 12, 6)  # X (to the right), Y (anterior), Z (superior)
SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-7.6, 12.0, -40.0)  # RAS mm of voxel (0, 0, 0)
AFFINE = axis_aligned_affine(SPACING, ORIGIN)


def _ct() -> np.ndarray:
    return asymmetric_ct(SHAPE)


def _itk_image(stored: np.ndarray, spacing, origin, direction):
    """An ITK image whose index (i, j, k) holds stored[i, j, k]."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(stored.transpose(2, 1, 0)))
    image.SetSpacing([float(s) for s in spacing])
    image.SetOrigin([float(o) for o in origin])
    image.SetDirection([float(d) for d in np.asarray(direction, float).ravel()])
    return image


def _lps_far_corner() -> list[float]:
    """LPS x, y of the most right, anterior voxel (RAS voxel (X-1, Y-1, 0))."""
    return [-(ORIGIN[0] + SPACING[0] * (SHAPE[0] - 1)), -(ORIGIN[1] + SPACING[1] * (SHAPE[1] - 1))]


def _stored_lps(ct):
    """As LUNA16 stores scans: identity direction, so i runs to the left, j to posterior."""
    return _itk_image(ct[::-1, ::-1, :], SPACING, [*_lps_far_corner(), ORIGIN[2]], np.eye(3))


def _stored_permuted(ct):
    """Index axes (i, j, k) run superior, left, posterior: stored[a, b, c] = ct[X-1-b, Y-1-c, a]."""
    stored = ct[::-1, ::-1, :].transpose(2, 0, 1)
    direction = np.array([[0, 1, 0], [0, 0, 1], [1, 0, 0]])  # columns: the index axes in LPS
    spacing = (SPACING[2], SPACING[0], SPACING[1])
    return _itk_image(stored, spacing, [*_lps_far_corner(), ORIGIN[2]], direction)


@pytest.mark.parametrize("store", [_stored_lps, _stored_permuted])
@pytest.mark.parametrize("suffix", [".mhd", ".mha"])
def test_metaimage_gives_the_ras_volume(tmp_path, store, suffix):
    import SimpleITK as sitk

    ct = _ct()
    path = tmp_path / f"ct{suffix}"
    sitk.WriteImage(store(ct), str(path))
    if suffix == ".mhd":
        assert (tmp_path / "ct.raw").is_file()
    image = read_image(path)
    assert image.array.shape == (1, *SHAPE) and image.array.dtype == np.float32
    np.testing.assert_array_equal(image.array[0], ct)
    assert image.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-5)
    assert image.meta["format"] == "MetaImage"


def _oblique() -> np.ndarray:
    """A rotation of 10 degrees about z then 20 about x, with the first axis flipped."""
    a, b = np.radians(10), np.radians(20)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx @ np.diag([-1.0, 1.0, 1.0])


@pytest.mark.parametrize("direction", ["permuted", "oblique"])
def test_metaimage_and_nifti_of_one_image_read_identically(tmp_path, direction):
    """ITK writes NIfTI in RAS itself: the two files of one ITK image must agree after reading."""
    import SimpleITK as sitk

    ct = _ct()
    image = _stored_permuted(ct) if direction == "permuted" else _itk_image(
        ct, SPACING, (3.0, -4.0, 5.0), _oblique()
    )  # fmt: skip
    sitk.WriteImage(image, str(tmp_path / "ct.mhd"))
    sitk.WriteImage(image, str(tmp_path / "ct.nii.gz"))
    mhd, nifti = read_image(tmp_path / "ct.mhd"), read_image(tmp_path / "ct.nii.gz")
    np.testing.assert_array_equal(mhd.array, nifti.array)
    np.testing.assert_allclose(mhd.affine, nifti.affine, atol=1e-4)
    assert mhd.spacing == pytest.approx(nifti.spacing)
    assert nib.aff2axcodes(mhd.affine) == ("R", "A", "S")


def test_single_slice_is_2d_like_nifti(tmp_path):
    import SimpleITK as sitk

    plane = np.arange(20, dtype=np.float32).reshape(4, 5)  # (i, j)
    image = _itk_image(plane[..., None], (0.5, 0.6, 1.0), (0, 0, 0), np.eye(3))
    sitk.WriteImage(image, str(tmp_path / "s.mha"))
    sitk.WriteImage(image, str(tmp_path / "s.nii"))
    mha = read_image(tmp_path / "s.mha")
    assert mha.spatial_dims == 2 and mha.affine is None
    np.testing.assert_array_equal(mha.array[0], plane)
    np.testing.assert_array_equal(mha.array, read_image(tmp_path / "s.nii").array)
    assert mha.spacing == pytest.approx((0.5, 0.6))


def test_modality_from_the_header(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(_stored_lps(_ct()), str(tmp_path / "ct.mhd"))
    assert read_image(tmp_path / "ct.mhd").modality is None  # ITK writes MET_MOD_UNKNOWN
    header = (tmp_path / "ct.mhd").read_text()
    (tmp_path / "ct.mhd").write_text(header.replace("DimSize", "Modality = MET_MOD_CT\nDimSize"))
    assert read_image(tmp_path / "ct.mhd").modality == "CT"


@pytest.fixture
def mhd(tmp_path):
    import SimpleITK as sitk

    sitk.WriteImage(_stored_lps(_ct()), str(tmp_path / "ct.mhd"))
    return tmp_path / "ct.mhd"


def test_missing_raw_is_named(mhd):
    (mhd.parent / "ct.raw").unlink()
    with pytest.raises(ImageReadError, match=r"ct\.mhd: its data file .*ct\.raw is missing"):
        read_image(mhd)


def test_truncated_raw_is_named(mhd):
    raw = mhd.parent / "ct.raw"
    raw.write_bytes(raw.read_bytes()[:100])
    with pytest.raises(ImageReadError, match=r"ct\.mhd: its data file .*ct\.raw holds 100 bytes"):
        read_image(mhd)


def test_truncated_mha_is_named(tmp_path):
    import SimpleITK as sitk

    path = tmp_path / "ct.mha"
    sitk.WriteImage(_stored_lps(_ct()), str(path))
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ImageReadError, match=r"ct\.mha: its data file .* holds \d+ bytes"):
        read_image(path)


def test_corrupt_header(mhd):
    header = mhd.read_text()
    mhd.write_text(header.replace("ElementType = MET_SHORT", "ElementType = MET_NOPE"))
    with pytest.raises(ImageReadError, match=r"ct\.mhd: not a readable MetaImage file \(.+\)"):
        read_image(mhd)


def test_garbage_mha(tmp_path):
    path = tmp_path / "junk.mha"
    path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ImageReadError, match=r"junk\.mha: not a readable MetaImage file"):
        read_image(path)


def test_vector_image_is_refused(tmp_path):
    import SimpleITK as sitk

    rgb = sitk.GetImageFromArray(np.zeros((4, 5, 3), np.uint8), isVector=True)
    sitk.WriteImage(rgb, str(tmp_path / "rgb.mha"))
    with pytest.raises(ImageReadError, match=r"rgb\.mha: 3 components per pixel"):
        read_image(tmp_path / "rgb.mha")


def test_sources_are_the_headers_never_the_raw_files(mhd):
    import SimpleITK as sitk

    sitk.WriteImage(_stored_lps(_ct()), str(mhd.parent / "other.mha"))
    assert not is_supported(mhd.parent / "ct.raw")
    sources, problems = collect_sources([mhd.parent])
    assert not problems
    assert sorted(s.paths[0].name for s in sources) == ["ct.mhd", "other.mha"]
