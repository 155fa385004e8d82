"""MetaImage through SimpleITK: `.mhd` headers with their `.raw` data (as LUNA16 ships) and `.mha` files.

Volumes leave as the NIfTI reader's do: (1, X, Y, Z) float32 in the closest RAS+ orientation with a 4x4
RAS affine and the spacing in mm, so one scan saved as NIfTI and as MetaImage reads identically. ITK
states positions in LPS: the affine is built in LPS from origin, spacing and direction, then flipped.
"""

import re
from pathlib import Path

import numpy as np

from medfound.errors import ImageReadError
from medfound.io.geometry import to_canonical, voxel_spacing
from medfound.io.image import MedicalImage

METAIMAGE_SUFFIXES = (".mhd", ".mha")

# ITK's patient coordinates are LPS+ (x to the patient's left, y to posterior); ours are RAS+.
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# The MetaIO modality codes that name a DICOM modality (the rest: unknown).
_MODALITIES = {"MET_MOD_CT": "CT", "MET_MOD_MR": "MR", "MET_MOD_NM": "NM", "MET_MOD_US": "US"}

# Bytes per element of the MetaIO types whose size does not depend on the platform.
_ELEMENT_BYTES = {
    "MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
    "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_FLOAT": 4, "MET_DOUBLE": 8,
}  # fmt: skip

_HEADER_BYTES = 65536  # MetaImage headers are a few hundred bytes; .mha data follow them


def itk_affine(
    origin: tuple[float, ...], spacing: tuple[float, ...], direction: tuple[float, ...]
) -> np.ndarray:
    """4x4 map from ITK voxel indices (i, j, k) to RAS mm, from ITK's (LPS) origin, spacing and
    direction (row-major 3x3; its columns are the directions of the index axes)."""
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(direction, float).reshape(3, 3) * np.asarray(spacing, float)
    lps[:3, 3] = origin
    return _LPS_TO_RAS @ lps


def read_metaimage(path: Path) -> MedicalImage:
    """Read a `.mhd` (with its data file) or `.mha`: a volume as (1, X, Y, Z) in RAS+ with its affine,
    one slice as (1, X, Y) as stored (as the NIfTI reader does), without an affine.

    Raises ImageReadError naming the file: a missing or truncated data file, a corrupt header, a
    non-scalar or 4D image.
    """
    import SimpleITK as sitk

    _check_data_file(path)
    try:
        itk = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ImageReadError(f"{path}: not a readable MetaImage file ({_itk_reason(exc)})") from exc
    if itk.GetNumberOfComponentsPerPixel() != 1:
        raise ImageReadError(
            f"{path}: {itk.GetNumberOfComponentsPerPixel()} components per pixel; "
            "only scalar MetaImages are supported"
        )
    if itk.GetDimension() not in (2, 3):
        raise ImageReadError(
            f"{path}: expected a 2D or 3D image, got {itk.GetDimension()}D (size {itk.GetSize()})"
        )
    # SimpleITK's arrays are (k, j, i); transposed, array axes follow the ITK index (i, j, k).
    data = sitk.GetArrayFromImage(itk).astype(np.float32, copy=False).T
    code = itk.GetMetaData("Modality") if itk.HasMetaDataKey("Modality") else ""
    modality, meta = _MODALITIES.get(code.strip()), {"format": "MetaImage"}
    spacing = tuple(float(s) for s in itk.GetSpacing())
    if data.ndim == 3 and data.shape[2] == 1:  # a single slice is a 2D image
        data = data[..., 0]
    if data.ndim == 2:
        return MedicalImage(
            np.ascontiguousarray(data)[None], str(path), modality, spacing[:2], meta=meta
        )
    affine = itk_affine(itk.GetOrigin(), spacing, itk.GetDirection())
    volume, affine = to_canonical(data, affine)
    return MedicalImage(
        volume[None], str(path), modality, voxel_spacing(affine), None, meta, affine
    )


def _itk_reason(exc: RuntimeError) -> str:
    """The line of an ITK exception that says what failed, without source paths and object ids."""
    lines = [line for line in str(exc).splitlines() if "ERROR:" in line]
    if not lines:
        return str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    return re.sub(r"^.*?ERROR:\s*(\w+\(0x[0-9a-fA-F]+\):\s*)?", "", lines[0]).strip()


def _header(path: Path) -> tuple[dict[str, str], int] | None:
    """The `Key = Value` fields of a MetaImage header up to ElementDataFile (always its last field)
    and the byte offset just after it; None when the header does not end within the first 64 KiB."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(_HEADER_BYTES)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read the MetaImage header ({exc})") from exc
    fields, offset = {}, 0
    for line in head.splitlines(keepends=True):
        offset += len(line)
        key, sep, value = line.decode("latin-1").partition("=")
        if sep:
            fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            return fields, offset
    return None


def _check_data_file(path: Path) -> None:
    """Name a missing or truncated data file in the message: ITK only says the header cannot be
    read (and blames a missing header). Formats this check does not know are left to ITK."""
    parsed = _header(path)
    if parsed is None:
        return
    fields, offset = parsed
    name = fields["ElementDataFile"]
    if name.upper().startswith("LIST") or "%" in name:  # slice lists and file patterns
        return
    local = name.upper() == "LOCAL"
    data = path if local else path.parent / name
    if not data.is_file():
        raise ImageReadError(f"{path}: its data file {data} is missing")
    element = _ELEMENT_BYTES.get(fields.get("ElementType", ""))
    compressed = fields.get("CompressedData", "False").lower() == "true"
    if element is None or compressed or "HeaderSize" in fields:
        return
    try:
        dims = [int(v) for v in fields.get("DimSize", "").split()]
        channels = int(fields.get("ElementNumberOfChannels", "1"))
    except ValueError:
        return  # a malformed field: ITK's own message says which
    needed = int(np.prod(dims)) * channels * element if dims else 0
    held = data.stat().st_size - (offset if local else 0)
    if held < needed:
        raise ImageReadError(
            f"{path}: its data file {data} holds {held} bytes of image data, the header's "
            f"DimSize {dims} of {fields['ElementType']} needs {needed} (truncated?)"
        )
