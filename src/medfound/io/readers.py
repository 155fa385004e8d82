"""One entry point, `read_image`, that picks the reader from the file and checks what it returns."""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.errors import ImageReadError
from medfound.io.dicom import DICOM_SUFFIXES, is_dicom, read_dicom, read_dicom_series
from medfound.io.image import MedicalImage
from medfound.io.metaimage import METAIMAGE_SUFFIXES, read_metaimage
from medfound.io.raster import RASTER_SUFFIXES, read_raster
from medfound.io.slide import SLIDE_SUFFIXES, is_slide
from medfound.io.volume import NIFTI_SUFFIXES, read_nifti, read_npy
from medfound.privacy import UidPolicy

# A .mhd header's data file (.raw, .zraw) is never a source of its own: the header is.
SUPPORTED_SUFFIXES = (
    *SLIDE_SUFFIXES,  # found in folders; `embed` and `tile` tile them, read_image refuses them
    *RASTER_SUFFIXES,
    *DICOM_SUFFIXES,
    *NIFTI_SUFFIXES,
    *METAIMAGE_SUFFIXES,
    ".npy",
)


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def is_supported(path: Path) -> bool:
    """True for files medfound can read: a known suffix, or DICOM without an extension (with its
    preamble, or headerless: io.dicom.is_dicom)."""
    return _suffix(path) in SUPPORTED_SUFFIXES or (path.suffix == "" and is_dicom(path))


def read_image(
    path: str | Path | Sequence[Path],
    source_id: str | None = None,
    uids: UidPolicy | None = None,
) -> MedicalImage:
    """Read an image file, or a DICOM series given as a list of its files.

    DICOM UIDs in the returned source id follow `uids` (default: a keyed hash, see privacy.py).

    Returns a MedicalImage with finite float32 values. Raises ImageReadError, naming the file and the
    reason, for anything unreadable: missing, empty, corrupt, wrong format, non-finite values.
    """
    if not isinstance(path, str | Path):
        paths = [Path(p) for p in path]
        image = read_dicom_series(paths, source_id or str(paths[0].parent))
        return _checked(image)
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ImageReadError(f"{path}: empty file")
    suffix = _suffix(path)
    if is_slide(path):  # decoding a gigapixel level 0 whole would take GBs of memory
        raise ImageReadError(
            f"{path}: a whole-slide image; tile it on its tissue with `medfound tile` (and embed "
            "the tiles)"
        )
    if suffix in RASTER_SUFFIXES:
        image = read_raster(path)
    elif suffix in DICOM_SUFFIXES or (suffix == "" and is_dicom(path)):
        image = read_dicom(path, uids)
    elif suffix in NIFTI_SUFFIXES:
        image = read_nifti(path)
    elif suffix in METAIMAGE_SUFFIXES:
        image = read_metaimage(path)
    elif suffix == ".npy":
        image = read_npy(path)
    else:
        raise ImageReadError(f"{path}: unsupported file type {suffix or '(no suffix)'}")
    if source_id is not None:
        image.source_id = source_id
    return _checked(image)


def _checked(image: MedicalImage) -> MedicalImage:
    array = image.array
    if array.size == 0 or min(array.shape) == 0:
        raise ImageReadError(f"{image.source_id}: image has no pixels (shape {array.shape})")
    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
    if bad:
        raise ImageReadError(f"{image.source_id}: {bad} of {array.size} values are NaN or infinite")
    if image.channels not in (1, 3):
        raise ImageReadError(f"{image.source_id}: expected 1 or 3 channels, got {image.channels}")
    return image
