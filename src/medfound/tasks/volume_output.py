"""Outputs on the input's own grid: a NIfTI input's volumes written back in its voxel order and
affine (the readers turn volumes to RAS+), distinct output names per input. What `medfound restore`
and `medfound predict` share."""

import gzip
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from medfound.data.sources import ImageSource
from medfound.files import atomic_write
from medfound.io.image import MedicalImage

log = logging.getLogger(__name__)

_DESCRIP_BYTES = 80  # the NIfTI-1 header's description field


def output_names(sources: Sequence[ImageSource]) -> list[str]:
    """A distinct output name per source: the file name without its image suffix (the folder's
    name for a DICOM series), then `_2`, `_3`, ... for later sources that would reuse one."""
    taken: set[str] = set()
    names = []
    for source in sources:
        base = _base_name(source)
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}_{n}"
        taken.add(name)
        names.append(name)
    return names


def _base_name(source: ImageSource) -> str:
    path = source.paths[0]
    if source.series:
        return path.parent.name or "series"
    lower = path.name.lower()
    for suffix in (".nii.gz", ".nii", ".npy", ".mhd", ".mha", ".nrrd", ".dcm", ".dicom"):
        if lower.endswith(suffix) and len(lower) > len(suffix):
            return path.name[: -len(suffix)]
    return path.stem or path.name


def output_grid(
    image: MedicalImage, source: ImageSource
) -> tuple[np.ndarray, Callable[[np.ndarray], np.ndarray], tuple[int, int] | None]:
    """The affine to write with, the map from the reader's array to the written one, and the
    NIfTI (qform, sform) codes to keep.

    A NIfTI input is written back in its own voxel order (the reader turned it to RAS+), so the
    outputs have its shape and affine exactly; other inputs keep the reader's RAS+ grid and affine.
    Arrays without geometry (.npy, 2D images) get their spacing, or 1 mm, on the diagonal.
    """
    if image.affine is None:
        spacing = list(image.spacing or ()) + [1.0] * 3
        return np.diag([*spacing[:3], 1.0]), _same, None
    native = _nifti_grid(source) if not source.series else None
    if native is not None:
        affine, shape, codes = native
        back = _reorientation(image.affine, affine, image.array.shape[1:], shape)
        if back is not None:
            return affine, back, codes
        log.warning(
            "%s: written in RAS+ orientation (its own grid could not be matched)", source.id
        )
    return image.affine, _same, None


def _same(array: np.ndarray) -> np.ndarray:
    return array


def _nifti_grid(source: ImageSource):
    """(affine, 3D shape, (qform, sform) codes) of a NIfTI input as stored, else None."""
    path = source.paths[0]
    if not path.name.lower().endswith((".nii", ".nii.gz")):
        return None
    import nibabel as nib

    img = nib.load(str(path))  # the header only; the reader has already decoded the data
    codes = (int(img.header["qform_code"]), int(img.header["sform_code"]))
    if codes == (0, 0):  # no stated geometry: keep the affine nibabel derives, stated as aligned
        codes = (0, 2)
    return np.asarray(img.affine, float), tuple(img.shape[:3]), codes


def _reorientation(canonical_affine, native_affine, canonical_shape, native_shape):
    """A function taking the reader's RAS+ array back to the file's own axis order, or None when
    the two grids are not the same voxels (then the RAS+ grid is written)."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    transform = ornt_transform(io_orientation(canonical_affine), io_orientation(native_affine))
    affine = canonical_affine @ inv_ornt_aff(transform, canonical_shape)
    shape = tuple(np.asarray(canonical_shape)[transform[:, 0].astype(int)])
    if shape != tuple(native_shape) or not np.allclose(affine, native_affine, atol=1e-4):
        return None
    return lambda array: np.ascontiguousarray(apply_orientation(array, transform))


def write_nifti(
    path: Path,
    data: np.ndarray,
    affine: np.ndarray,
    description: str,
    codes: tuple[int, int] | None,
    dtype=np.float32,
) -> None:
    """A NIfTI-1 file (.nii.gz) of `dtype` (float32: images; uint8: label maps), written atomically."""
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    qform_code, sform_code = codes or (1, 1)  # default: scanner coordinates (DICOM-derived)
    img.set_qform(affine, code=qform_code)
    img.set_sform(affine, code=sform_code)
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = description.encode()[:_DESCRIP_BYTES]
    payload = img.to_bytes()

    def write(tmp: Path) -> None:
        # Through gzip directly: nibabel picks the format from the name, and the temporary's ends
        # in .partial. Level 1 as nibabel's own default; mtime 0 keeps reruns byte-identical.
        with (
            open(tmp, "wb") as fh,
            gzip.GzipFile(filename="", mode="wb", fileobj=fh, compresslevel=1, mtime=0) as gz,
        ):
            gz.write(payload)

    atomic_write(path, write)
