"""Where voxels are in the patient: DICOM plane geometry -> a RAS affine, and reorientation to RAS+.

Every volume leaves the readers in one orientation, the closest to RAS+ (axes pointing to the patient's
Right, Anterior, Superior, as nibabel's `as_closest_canonical`, MONAI's `Orientation("RAS")` and TorchIO's
`ToCanonical` give), with a 4x4 affine from voxel indices to RAS millimetres. DICOM states positions in
LPS, so its x and y are negated on the way in.
"""

from collections.abc import Sequence

import numpy as np

# DICOM patient coordinates are LPS+ (x to the patient's left, y to posterior); NIfTI's are RAS+.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def slice_normal(orientation: Sequence[float]) -> np.ndarray:
    """Unit normal of the image plane given by ImageOrientationPatient (row cosines, column cosines)."""
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    normal = np.cross(row, col)
    return normal / np.linalg.norm(normal)


def dicom_affine(
    orientation: Sequence[float],
    first_position: Sequence[float],
    last_position: Sequence[float],
    pixel_spacing: Sequence[float],
    slices: int,
    slice_gap: float | None = None,
) -> np.ndarray | None:
    """Voxel (column i, row j, slice k) -> RAS mm for a stack of DICOM planes sorted along the normal.

    `first_position`/`last_position` are the ImagePositionPatient of the first and last slice; the
    slice step is their difference over `slices - 1` (so a stack with gaps gets the mean step). A
    single slice steps `slice_gap` (SpacingBetweenSlices or SliceThickness; 1 mm when unknown) along
    the normal. PixelSpacing is (spacing between rows, spacing between columns): the first value
    scales the column direction, the second the row direction (PS3.3 C.7.6.2.1.1).

    Returns None when the geometry is degenerate (parallel cosines, slices at one position).
    """
    row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:6], float)
    if np.linalg.norm(np.cross(row, col)) < 1e-6:
        return None
    first, last = np.asarray(first_position, float), np.asarray(last_position, float)
    if slices > 1:
        step = (last - first) / (slices - 1)
        if np.linalg.norm(step) < 1e-6:  # e.g. several echoes or phases at one position
            return None
    else:
        step = slice_normal(orientation) * (slice_gap or 1.0)
    affine = np.eye(4)
    affine[:3, 0] = row * float(pixel_spacing[1])  # i runs along a row, one column spacing a step
    affine[:3, 1] = col * float(pixel_spacing[0])  # j runs down a column, one row spacing a step
    affine[:3, 2] = step
    affine[:3, 3] = first
    return _LPS_TO_RAS @ affine


def to_canonical(volume: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip and permute the axes of an (X, Y, Z) volume to the closest RAS+; the affine follows.

    Oblique volumes are not resampled: their axes go to the nearest RAS+ axes, and the affine keeps
    the exact geometry (as nibabel's `as_closest_canonical`).
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    ornt = io_orientation(affine)
    canonical = np.ascontiguousarray(apply_orientation(volume, ornt))
    return canonical, affine @ inv_ornt_aff(ornt, volume.shape)


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis (the lengths of the affine's columns)."""
    from nibabel.affines import voxel_sizes

    return tuple(float(v) for v in voxel_sizes(affine))
