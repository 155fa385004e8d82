import numpy as np
import pytest

from medfound.errors import ImageReadError
from medfound.io import read_image
from tests.factories import write_nifti


def test_nifti_volume_with_spacing(tmp_path):
    volume = np.random.default_rng(0).normal(size=(6, 7, 8)).astype(np.float32)
    image = read_image(write_nifti(tmp_path / "v.nii.gz", volume, spacing=(0.8, 0.9, 2.5)))
    assert image.array.shape == (1, 6, 7, 8)
    assert image.spacing == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_allclose(image.array[0], volume)


def test_nifti_affine_is_kept(tmp_path):
    path = write_nifti(tmp_path / "v.nii.gz", np.zeros((6, 7, 8)), spacing=(0.8, 0.9, 2.5))
    np.testing.assert_allclose(read_image(path).affine, np.diag([0.8, 0.9, 2.5, 1.0]))


def test_nifti_stored_las_is_flipped_to_ras(tmp_path):
    import nibabel as nib

    volume = np.random.default_rng(1).normal(size=(6, 7, 8, 1)).astype(np.float32)
    affine = np.diag([-2.0, 1.0, 1.0, 1.0])  # the first axis runs to the patient's left
    nib.save(nib.Nifti1Image(volume, affine), str(tmp_path / "las.nii"))
    image = read_image(tmp_path / "las.nii")
    np.testing.assert_array_equal(image.array[0], volume[::-1, :, :, 0])
    assert image.spacing == (2.0, 1.0, 1.0)
    np.testing.assert_allclose(image.affine[:3, :3], np.diag([2.0, 1.0, 1.0]))
    np.testing.assert_allclose(image.affine[:3, 3], [-10.0, 0.0, 0.0])


def test_single_slice_nifti_is_2d(tmp_path):
    image = read_image(write_nifti(tmp_path / "s.nii", np.ones((5, 6, 1))))
    assert image.spatial_dims == 2 and image.array.shape == (1, 5, 6)
    assert image.affine is None


def test_nan_nifti_is_refused(tmp_path):
    path = write_nifti(tmp_path / "nan.nii.gz", np.full((4, 4, 4), np.nan))
    with pytest.raises(ImageReadError, match=r"nan\.nii\.gz: 64 of 64 values are NaN"):
        read_image(path)


def test_npy_layouts(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((5, 6)))
    np.save(tmp_path / "b.npy", np.zeros((3, 5, 6)))
    np.save(tmp_path / "c.npy", np.zeros((5, 6, 7)))
    assert read_image(tmp_path / "a.npy").array.shape == (1, 5, 6)
    assert read_image(tmp_path / "b.npy").array.shape == (3, 5, 6)
    assert read_image(tmp_path / "c.npy").array.shape == (1, 5, 6, 7)


def test_corrupt_nifti(tmp_path):
    (tmp_path / "bad.nii").write_bytes(b"\x00" * 400)
    with pytest.raises(ImageReadError, match=r"bad\.nii: not a readable NIfTI"):
        read_image(tmp_path / "bad.nii")
