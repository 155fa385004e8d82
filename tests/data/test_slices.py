"""Volumes into 2D models: which slices, along which axis, shown as a DICOM viewer shows them, and
where they lie."""

import numpy as np
import pytest
import torch

from medfound.data.slices import (
    acquisition_axis,
    chosen_indices,
    parse_slices,
    volume_slices,
)
from medfound.errors import ConfigError
from medfound.io import read_image
from medfound.io.dicom import read_dicom_series
from medfound.io.image import MedicalImage
from tests.factories import write_dicom


def _axial_series(folder, heights=(0.0, 2.5, 5.0, 7.5)):
    """An axial series with a different asymmetric picture per slice, written out of order."""
    from pydicom.uid import generate_uid

    series, rng, paths = generate_uid(), np.random.default_rng(3), []
    for i in np.random.default_rng(4).permutation(len(heights)):
        paths.append(
            write_dicom(
                folder / f"z{i}.dcm",
                rng.integers(0, 4000, (5, 7)).astype(np.uint16),
                SeriesInstanceUID=series,
                ImagePositionPatient=[-10.0, -20.0, heights[i]],
                ImageOrientationPatient=[1, 0, 0, 0, 1, 0],
                PixelSpacing=[0.8, 0.6],
                RescaleSlope=1,
                RescaleIntercept=-1024,
            )
        )
    return paths


def test_each_slice_of_an_axial_series_is_the_picture_of_its_file(tmp_path):
    paths = _axial_series(tmp_path)
    volume = read_dicom_series(paths, "series")
    parts = volume_slices(volume, "each")
    assert [p.index for p in parts] == [0, 1, 2, 3]
    by_height = {}
    for path in paths:
        import pydicom

        by_height[float(pydicom.dcmread(path).ImagePositionPatient[2])] = read_image(path).array
    for part in parts:
        # superior is +z in RAS as in DICOM's LPS: the position is the file's own height
        np.testing.assert_array_equal(part.image.array, by_height[part.position_mm])
        assert part.image.spacing == (0.8, 0.6) and part.image.affine is None
    assert [p.position_mm for p in parts] == [0.0, 2.5, 5.0, 7.5]


def test_frames_of_a_volume_without_geometry_come_back_as_stored(tmp_path):
    frames = np.random.default_rng(5).integers(0, 255, (3, 4, 6)).astype(np.uint16)
    volume = read_image(write_dicom(tmp_path / "cine.dcm", frames, modality="US", bits=8))
    assert volume.affine is None
    parts = volume_slices(volume, "each")
    for k, part in enumerate(parts):
        np.testing.assert_array_equal(part.image.array[0], frames[k])
        assert part.position_mm is None


@pytest.mark.parametrize(
    ("count", "mode", "expected"),
    [(10, "each", list(range(10))), (10, "middle", [5]), (10, 3, [0, 4, 9]), (2, 5, [0, 1])],
)
def test_which_slices(count, mode, expected):
    assert chosen_indices(count, mode) == expected


@pytest.mark.parametrize("text", ["some", "0", "-2", ""])
def test_a_slice_choice_that_means_nothing_is_refused(text):
    with pytest.raises(ConfigError, match="--slices"):
        parse_slices(text)


def test_the_acquisition_axis_is_the_thickest_and_can_be_chosen():
    volume = np.zeros((1, 6, 5, 4), np.float32)
    assert acquisition_axis(MedicalImage(volume, "v", spacing=(0.7, 0.7, 3.0))) == 2
    assert acquisition_axis(MedicalImage(volume, "v", spacing=(3.0, 0.7, 0.7))) == 0
    assert acquisition_axis(MedicalImage(volume, "v", spacing=(1.0, 1.0, 1.0))) == 2
    sagittal = volume_slices(MedicalImage(volume, "v", spacing=(3.0, 0.7, 0.7)), "each")
    assert len(sagittal) == 6 and sagittal[0].image.array.shape == (1, 4, 5)
    assert len(volume_slices(MedicalImage(volume, "v"), "each", axis=1)) == 5


def test_training_draws_one_slice_of_a_volume_per_visit_and_the_same_again_on_resume(tmp_path):
    from medfound.data.crops import CropSpec
    from medfound.data.sources import collect_sources
    from medfound.data.view_pairs import ViewPairDataset
    from medfound.io import get_preset
    from tests.factories import write_nifti, write_png

    volume = np.random.default_rng(0).uniform(0, 100, (6, 5, 8)).astype(np.float32)
    write_nifti(tmp_path / "v.nii.gz", volume, spacing=(1.0, 1.0, 3.0))
    write_png(tmp_path / "i.png", np.full((10, 12), 200, np.uint8))
    sources, _ = collect_sources([tmp_path])
    full = CropSpec(16, scale=(1.0, 1.0), ratio=(0.5, 2.0))  # the whole slice: slices tell apart
    dataset = ViewPairDataset(sources, get_preset("path", size=16), full, seed=3)
    assert dataset.keyed_by_epoch
    v = [s.id for s in sources].index(str((tmp_path / "v.nii.gz").resolve()))
    drawn = [dataset[(epoch, v)]["tensor"] for epoch in range(8)]
    assert all(t.shape == (2, 3, 16, 16) for t in drawn)
    assert len({round(float(t.mean()), 5) for t in drawn}) >= 4  # other slices in other epochs
    assert torch.equal(dataset[(5, v)]["tensor"], drawn[5])  # a resumed run draws the same
    image = dataset[(0, 1 - v)]
    assert image["tensor"].shape == (2, 3, 16, 16) and image["group"]


def test_a_draw_picks_only_among_the_chosen_slices():
    assert {chosen_indices(10, ("draw", seed, "middle"))[0] for seed in range(20)} == {5}
    drawn = {chosen_indices(10, ("draw", seed, 3))[0] for seed in range(40)}
    assert drawn == {0, 4, 9} or drawn == {0, 5, 9}
    assert len({chosen_indices(10, ("draw", seed))[0] for seed in range(40)}) > 5


def test_the_slices_of_a_volume_are_pooled_into_one_output_by_their_mean():
    from medfound.data.slices import pool_slices

    rows = torch.arange(12, dtype=torch.float32).reshape(6, 2)
    items = [{"index": 0}, {"index": 1, "slices": [{}, {}, {}]}, {"index": 2}, {"slices": [{}]}]
    pooled = pool_slices(rows, items)
    torch.testing.assert_close(pooled, torch.tensor([[0.0, 1], [4, 5], [8, 9], [10, 11]]))
    with pytest.raises(ValueError, match="6 output rows for items of 5 rows"):
        pool_slices(rows, items[:3])
