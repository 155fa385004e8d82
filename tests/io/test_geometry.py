"""One CT, three files (a DICOM series, an enhanced multi-frame DICOM, a NIfTI stored P-S-R): one volume.

The scan is defined in RAS+ voxel order with its affine; each writer below encodes it by hand, following
its format's own conventions, so the readers are checked against the truth and not only each other.
"""

import nibabel as nib
import numpy as np
import pytest
import torch

from medfound.data.datasets import ImageDataset, collate_items
from medfound.data.sources import collect_sources
from medfound.io import get_preset, read_image
from medfound.io.geometry import dicom_affine, to_canonical
from medfound.models import load_model
from tests.factories import asymmetric_ct, axis_aligned_affine, write_dicom

SHAPE = (20, 24, 12)  # X (to the right), Y (anterior), Z (superior)
SPACING = (0.8, 0.7, 2.5)
ORIGIN = (-7.6, 12.0, -40.0)  # RAS mm of voxel (0, 0, 0)
AFFINE = axis_aligned_affine(SPACING, ORIGIN)


def _ct() -> np.ndarray:
    return asymmetric_ct(SHAPE)


def _lps_corner() -> list[float]:
    """LPS x, y of the pixel every DICOM slice starts with: the most right, anterior one."""
    x = ORIGIN[0] + SPACING[0] * (SHAPE[0] - 1)
    y = ORIGIN[1] + SPACING[1] * (SHAPE[1] - 1)
    return [-x, -y]


def _slice_pixels(ct: np.ndarray, k: int) -> np.ndarray:
    """Axial DICOM slice k as stored (rows, columns): columns run to the patient's left (-X), rows
    to posterior (-Y), so pixel (r, c) is RAS voxel (X-1-c, Y-1-r, k)."""
    return (ct[::-1, ::-1, k].T + 1024).astype(np.uint16)


_AXIAL = {"ImageOrientationPatient": [1, 0, 0, 0, 1, 0], "PixelSpacing": [SPACING[1], SPACING[0]]}
_CT = {"RescaleSlope": 1, "RescaleIntercept": -1024}


def _write_series(folder, ct):
    from pydicom.uid import generate_uid

    folder.mkdir()
    series = generate_uid()
    order = np.random.default_rng(3).permutation(SHAPE[2])  # files and InstanceNumber shuffled
    for n, k in enumerate(order):
        write_dicom(
            folder / f"{n:03d}.dcm",
            _slice_pixels(ct, k),
            SeriesInstanceUID=series,
            InstanceNumber=n + 1,
            ImagePositionPatient=[*_lps_corner(), ORIGIN[2] + SPACING[2] * k],
            SliceThickness=3.0,  # thicker than the step (overlapping slices): positions must win
            **_AXIAL,
            **_CT,
        )
    return folder


def _write_multiframe(path, ct):
    """Enhanced multi-frame: geometry in the functional groups, frames in shuffled order."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    def item(**attributes):
        ds = Dataset()
        for key, value in attributes.items():
            setattr(ds, key, value)
        return ds

    order = np.random.default_rng(5).permutation(SHAPE[2])
    per_frame = [
        item(
            PlanePositionSequence=Sequence(
                [item(ImagePositionPatient=[*_lps_corner(), ORIGIN[2] + SPACING[2] * k])]
            )
        )
        for k in order
    ]
    shared = item(
        PlaneOrientationSequence=Sequence(
            [item(ImageOrientationPatient=_AXIAL["ImageOrientationPatient"])]
        ),
        PixelMeasuresSequence=Sequence(
            [item(PixelSpacing=_AXIAL["PixelSpacing"], SliceThickness=3.0)]
        ),
    )
    frames = np.stack([_slice_pixels(ct, k) for k in order])
    return write_dicom(
        path,
        frames,
        PerFrameFunctionalGroupsSequence=Sequence(per_frame),
        SharedFunctionalGroupsSequence=Sequence([shared]),
        **_CT,
    )


def _write_nifti_psr(path, ct):
    """Stored as (P, S, R): array axes run posterior, superior, right; the affine says so."""
    stored = ct[:, ::-1, :].transpose(1, 2, 0)  # stored[p, q, s] = ct[s, Y-1-p, q]
    affine = np.array(
        [
            [0, 0, SPACING[0], ORIGIN[0]],
            [-SPACING[1], 0, 0, ORIGIN[1] + SPACING[1] * (SHAPE[1] - 1)],
            [0, SPACING[2], 0, ORIGIN[2]],
            [0, 0, 0, 1],
        ]
    )
    assert nib.aff2axcodes(affine) == ("P", "S", "R")
    nib.save(nib.Nifti1Image(stored.astype(np.float32), affine), str(path))
    return path


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    ct = _ct()
    return ct, {
        "series": _write_series(folder / "series", ct),
        "multiframe": _write_multiframe(folder / "mf.dcm", ct),
        "nifti": _write_nifti_psr(folder / "ct.nii.gz", ct),
    }


def _read(kind, path):
    return read_image(sorted(path.iterdir())) if kind == "series" else read_image(path)


@pytest.mark.parametrize("kind", ["series", "multiframe", "nifti"])
def test_every_format_gives_the_ras_volume(scans, kind):
    ct, paths = scans
    image = _read(kind, paths[kind])
    assert image.array.shape == (1, *SHAPE)
    np.testing.assert_array_equal(image.array[0], ct)
    assert image.spacing == pytest.approx(SPACING)
    np.testing.assert_allclose(image.affine, AFFINE, atol=1e-5)


def test_series_and_nifti_give_the_same_embedding(scans):
    _, paths = scans
    model = load_model("monai:resnet10", random_init=True)
    sources, problems = collect_sources(
        [paths["series"], paths["multiframe"], paths["nifti"]], group_series=True
    )
    assert not problems and len(sources) == 3
    preset = get_preset("ct", size=(16, 16, 16))
    batch = collate_items(list(ImageDataset(sources, preset, **model.card.preprocess_args())))
    assert not batch["errors"]
    with torch.inference_mode():
        embeddings = model(batch["tensor"])
    torch.testing.assert_close(embeddings[0], embeddings[2], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(embeddings[1], embeddings[2], rtol=1e-5, atol=1e-6)


def test_dicom_affine_maps_pixel_indices_to_ras():
    # a sagittal plane: rows run to the feet (-S), columns to anterior (-P in LPS)
    affine = dicom_affine([0, -1, 0, 0, 0, -1], [10, 20, 30], [14, 20, 30], [0.5, 0.25], 3)
    column, row, slice_ = 8, 2, 1
    lps = np.array([10, 20, 30]) + column * 0.25 * np.array([0, -1, 0])
    lps = lps + row * 0.5 * np.array([0, 0, -1]) + slice_ * np.array([2, 0, 0])
    ras = affine @ [column, row, slice_, 1]
    np.testing.assert_allclose(ras[:3], [-lps[0], -lps[1], lps[2]])


def test_to_canonical_keeps_every_voxel_where_it_is():
    volume = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    affine = dicom_affine([0, -1, 0, 0, 0, -1], [10, 20, 30], [14, 20, 30], [0.5, 0.25], 4)
    canonical, new_affine = to_canonical(volume.astype(float), affine)
    assert nib.aff2axcodes(new_affine) == ("R", "A", "S")
    for index in np.ndindex(volume.shape):
        world = affine @ [*index, 1]
        new_index = np.rint(np.linalg.solve(new_affine, world)[:3]).astype(int)
        assert canonical[tuple(new_index)] == volume[index]


def test_degenerate_positions_give_no_affine():
    assert dicom_affine([1, 0, 0, 0, 1, 0], [0, 0, 5], [0, 0, 5], [1, 1], 4) is None
