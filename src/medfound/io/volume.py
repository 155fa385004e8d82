"""NIfTI (.nii, .nii.gz) through nibabel, and NumPy .npy arrays."""

from pathlib import Path

import numpy as np

from medfound.errors import ImageReadError
from medfound.io.image import MedicalImage

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def read_nifti(path: Path) -> MedicalImage:
    """Read a NIfTI file: a volume as (1, X, Y, Z) in RAS+ with its affine, one slice as (1, X, Y).

    Volumes are reoriented to the closest canonical (RAS+) orientation, so a scan stored LPS or with
    permuted axes gives the same array as its RAS twin; spacing is read from the canonical image.
    A single-slice file is a 2D image as stored, without an affine.
    """
    import nibabel as nib
    from nibabel.affines import voxel_sizes

    try:
        img = nib.load(str(path))
        if len(img.shape) == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        if len(img.shape) == 3 and img.shape[2] > 1:
            img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj, dtype=np.float32)
        # From the affine nibabel uses (sform, else qform), as DICOM's spacing comes from its
        # affine: the header's pixdim can disagree with an sform.
        zooms = tuple(float(z) for z in voxel_sizes(img.affine))
    except Exception as exc:  # nibabel raises many types for bad files
        raise ImageReadError(f"{path}: not a readable NIfTI file ({exc})") from exc
    if data.ndim not in (2, 3):
        raise ImageReadError(f"{path}: expected a 2D or 3D NIfTI image, got shape {data.shape}")
    if data.ndim == 3 and data.shape[2] == 1:  # a single slice is a 2D image
        data = data[..., 0]
    if data.ndim == 2:
        return MedicalImage(
            array=data[None], source_id=str(path), spacing=zooms[:2], meta={"format": "NIFTI"}
        )
    return MedicalImage(
        array=data[None],
        source_id=str(path),
        spacing=zooms[:3],
        meta={"format": "NIFTI"},
        affine=np.asarray(img.affine, dtype=np.float64),
    )


def read_npy(path: Path) -> MedicalImage:
    """Read a .npy array: (H, W), (X, Y, Z) single channel, or channels-first (C, H, W) with C 1 or 3."""
    try:
        data = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ImageReadError(f"{path}: not a readable .npy array ({exc})") from exc
    if not np.issubdtype(data.dtype, np.number) or np.issubdtype(data.dtype, np.complexfloating):
        raise ImageReadError(f"{path}: .npy array has non-real dtype {data.dtype}")
    data = data.astype(np.float32)
    if data.ndim == 3 and data.shape[0] in (1, 3):
        array = data
    elif data.ndim in (2, 3):
        array = data[None]
    else:
        raise ImageReadError(f"{path}: expected a 2D or 3D array, got shape {data.shape}")
    return MedicalImage(array=array, source_id=str(path), meta={"format": "NPY"})
