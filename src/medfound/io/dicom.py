"""DICOM through pydicom: single files (also multi-frame) and series folders stacked into volumes.

Intensity handling follows the DICOM pixel pipeline: modality LUT (RescaleSlope/Intercept, so CT is in
HU), then for projection radiographs the VOI LUT or window, then MONOCHROME1 inversion so that higher
always means brighter. Patient-identifying attributes are never copied into the returned metadata: only
the whitelisted, technical ones in `_SAFE_META` are.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.errors import ImageReadError
from medfound.io.image import MedicalImage

DICOM_SUFFIXES = (".dcm", ".dicom")

# Modalities whose stored values are physical quantities (HU, MR signal, counts): presets window them,
# the file's display window is not applied. Everything else (CR, DX, MG, XA, ...) is a radiograph-like
# image whose VOI window defines what the reader saw.
_QUANTITATIVE = {"CT", "MR", "PT", "NM"}

# Technical attributes that may appear in outputs. Anything not listed here never leaves the reader.
_SAFE_META = ("Modality", "PhotometricInterpretation", "BitsStored", "TransferSyntaxUID")

_CODEC_HINT = (
    "pip install 'medfound[dicom-codecs]' (pylibjpeg with its libjpeg and openjpeg plugins), "
    "or pip install python-gdcm"
)


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM preamble magic (bytes 128-131 are 'DICM')."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_dataset(path: Path, header_only: bool = False):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=header_only)
    except InvalidDicomError as exc:
        raise ImageReadError(f"{path}: not a DICOM file ({exc})") from exc
    except Exception as exc:
        raise ImageReadError(
            f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})"
        ) from exc


def _decode_pixels(ds, path: Path) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    try:
        return ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            raise ImageReadError(
                f"{path}: pixel data is compressed as {syntax.name} ({syntax}) and no installed "
                f"decoder handles it; install one: {_CODEC_HINT}"
            ) from exc
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({exc})") from exc


def _stored_range(ds) -> tuple[float, float]:
    """Range of the stored values after the modality LUT (DICOM PS3.3 C.11.1.1)."""
    if ds.get("ModalityLUTSequence"):
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.get("BitsStored", 16))
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2**bits - 1)
    else:
        lo, hi = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = sorted(
            (lo * float(slope) + float(intercept), hi * float(slope) + float(intercept))
        )
    return lo, hi


def _gray_pipeline(pixels: np.ndarray, ds, modality: str | None):
    """Modality LUT, then VOI (radiographs only), then MONOCHROME1 inversion."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds).astype(np.float32)
    value_range: tuple[float, float] | None = None
    if modality not in _QUANTITATIVE:
        if ds.get("VOILUTSequence"):
            values = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float32)
            value_range = (0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1))
        elif "WindowCenter" in ds and "WindowWidth" in ds:
            values = apply_voi_lut(values, ds, prefer_lut=False).astype(np.float32)
            value_range = _stored_range(ds)
        else:
            value_range = _stored_range(ds)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        lo, hi = value_range if value_range else (float(values.min()), float(values.max()))
        values = (lo + hi) - values
    return values, value_range


def _spacing_2d(ds) -> tuple[float, float] | None:
    spacing = ds.get("PixelSpacing") or ds.get("ImagerPixelSpacing")
    return (float(spacing[0]), float(spacing[1])) if spacing else None


def _safe_meta(ds) -> dict[str, str]:
    meta = {"format": "DICOM"}
    for key in _SAFE_META:
        value = ds.file_meta.get(key) if key == "TransferSyntaxUID" else ds.get(key)
        if value is not None:
            meta[key] = str(value)
    return meta


def _source_id(path: Path, ds) -> str:
    uid = ds.get("SOPInstanceUID")
    return f"{path}#{uid}" if uid else str(path)


def read_dicom(path: Path) -> MedicalImage:
    """Read one DICOM file. Single-frame -> (C, rows, cols); multi-frame -> (1, rows, cols, frames)."""
    ds = _read_dataset(path)
    pixels = _decode_pixels(ds, path)
    modality = str(ds.get("Modality")) if ds.get("Modality") else None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    meta = _safe_meta(ds)
    spacing = _spacing_2d(ds)
    if samples == 3:
        # pydicom converts YBR colour spaces to RGB when decoding (its as_rgb default).
        rgb = pixels.astype(np.float32)
        if frames > 1:
            raise ImageReadError(f"{path}: multi-frame colour DICOM is not supported")
        return MedicalImage(
            np.moveaxis(rgb, -1, 0), _source_id(path, ds), modality, spacing, (0.0, 255.0), meta
        )
    if samples != 1:
        raise ImageReadError(f"{path}: unsupported SamplesPerPixel={samples}")
    values, value_range = _gray_pipeline(pixels, ds, modality)
    if frames > 1:
        values = np.moveaxis(values, 0, -1)  # (frames, rows, cols) -> (rows, cols, frames)
        thickness = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
        if spacing is not None and thickness:
            spacing = (*spacing, float(thickness))
        elif spacing is not None:
            spacing = None  # no reliable z spacing: say nothing rather than guess
    return MedicalImage(values[None], _source_id(path, ds), modality, spacing, value_range, meta)


def series_key(path: Path) -> str | None:
    """SeriesInstanceUID of a DICOM file (header only), or None if it has none or is unreadable."""
    try:
        ds = _read_dataset(path, header_only=True)
    except ImageReadError:
        return None
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


def read_dicom_series(paths: Sequence[Path], source_id: str) -> MedicalImage:
    """Stack the slices of one series into (1, rows, cols, slices), ordered along the slice normal."""
    slices = []
    for path in paths:
        ds = _read_dataset(path)
        slices.append((ds, path))
    if not slices:
        raise ImageReadError(f"{source_id}: empty DICOM series")
    slices.sort(key=lambda item: _slice_position(item[0]))
    arrays, value_range = [], None
    for ds, path in slices:
        pixels = _decode_pixels(ds, path)
        if pixels.ndim != 2:
            raise ImageReadError(f"{path}: series slices must be single-frame grayscale")
        values, value_range = _gray_pipeline(pixels, ds, str(ds.get("Modality") or ""))
        arrays.append(values)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ImageReadError(f"{source_id}: slices of one series differ in size: {sorted(shapes)}")
    first = slices[0][0]
    spacing = _spacing_2d(first)
    if spacing is not None and len(slices) > 1:
        gaps = np.diff([_slice_position(ds) for ds, _ in slices])
        z = float(np.median(np.abs(gaps))) if np.any(gaps) else first.get("SliceThickness")
        spacing = (*spacing, float(z)) if z else None
    modality = str(first.get("Modality")) if first.get("Modality") else None
    volume = np.stack(arrays, axis=-1)[None]
    return MedicalImage(volume, source_id, modality, spacing, value_range, _safe_meta(first))


def _slice_position(ds) -> float:
    """Position along the slice normal (from ImagePositionPatient), else the InstanceNumber."""
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if position is not None and orientation is not None:
        row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
        return float(np.dot(np.cross(row, col), np.asarray(position, float)))
    return float(ds.get("InstanceNumber", 0) or 0)
