"""DICOM through pydicom: single files (also multi-frame) and series folders stacked into volumes.

Intensity handling follows the DICOM pixel pipeline: modality LUT (RescaleSlope/Intercept, so CT is in
HU), then for projection radiographs the VOI LUT or window, then MONOCHROME1 inversion so that higher
always means brighter. Patient-identifying attributes are never copied into the returned metadata: only
the whitelisted, technical ones in `_SAFE_META` are.
"""

import functools
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.errors import ImageReadError
from medfound.io.geometry import dicom_affine, slice_normal, to_canonical, voxel_spacing
from medfound.io.image import MedicalImage
from medfound.privacy import UidPolicy, uid_policy

log = logging.getLogger(__name__)

DICOM_SUFFIXES = (".dcm", ".dicom")

# Modalities whose stored values are physical quantities (HU, MR signal, counts): presets window them,
# the file's display window is not applied. Everything else (CR, DX, MG, XA, ...) is a radiograph-like
# image whose VOI window defines what the reader saw.
_QUANTITATIVE = {"CT", "MR", "PT", "NM"}

# Technical attributes that may appear in outputs. Anything not listed here never leaves the reader.
_SAFE_META = ("Modality", "PhotometricInterpretation", "BitsStored", "TransferSyntaxUID")

# The decoders installed with medfound (see the README's table of transfer syntaxes).
_DECODERS = "pylibjpeg with its libjpeg, openjpeg and rle plugins"


def is_dicom_file(path: Path) -> bool:
    """True when the file carries the DICOM preamble magic (bytes 128-131 are 'DICM')."""
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


# Values larger than this are read from the file when first used: a large file's pixel data is not
# read until the size checks have passed (_check_readable_whole).
_DEFER = "1 MB"


def is_dicom(path: Path) -> bool:
    """A DICOM file: the preamble magic, or, for files without one (ACR-NEMA, old exports), a
    first element in group 0008 (either byte order) and a header that parses as an image dataset.
    Other files cost a read of their first bytes."""
    if is_dicom_file(path):
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(2)
    except OSError:
        return False
    return head in (b"\x08\x00", b"\x00\x08") and _read_headerless(path, True) is not None


def _read_dataset(path: Path, header_only: bool = False):
    """The dataset of `path`. Files without the preamble and meta header (ACR-NEMA, some old
    exports) are read with pydicom's force=True when what follows parses as a dataset with an image
    (Rows and Columns); their transfer syntax is then the encoding pydicom found."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=header_only, defer_size=_DEFER)
        if "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):  # a meta header without it
            _fill_transfer_syntax(ds)
        return ds
    except InvalidDicomError as exc:
        headerless = _read_headerless(path, header_only)
        if headerless is None:
            raise ImageReadError(
                f"{path}: not a DICOM file (no preamble or meta header, and the content does not "
                f"parse as a DICOM image dataset: {exc})"
            ) from exc
        return headerless
    except Exception as exc:
        raise ImageReadError(
            f"{path}: unreadable DICOM file ({type(exc).__name__}: {exc})"
        ) from exc


def _read_headerless(path: Path, header_only: bool):
    import pydicom

    try:
        ds = pydicom.dcmread(
            str(path), stop_before_pixels=header_only, force=True, defer_size=_DEFER
        )
        if "Rows" not in ds or "Columns" not in ds:
            return None
    except Exception:
        return None
    _fill_transfer_syntax(ds)
    return ds


def _fill_transfer_syntax(ds) -> None:
    """Give a dataset read without a transfer syntax (no meta header, or one without the element)
    the one of the encoding it was read in (pixel decoding needs one)."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian as big
    from pydicom.uid import ExplicitVRLittleEndian as explicit
    from pydicom.uid import ImplicitVRLittleEndian as implicit

    if not hasattr(ds, "file_meta") or ds.file_meta is None:
        ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" not in ds.file_meta:
        implicit_vr, little_endian = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (
            big if not little_endian else implicit if implicit_vr else explicit
        )


def _decode_pixels(ds, path: Path) -> np.ndarray:
    if "PixelData" not in ds and "FloatPixelData" not in ds:
        raise ImageReadError(f"{path}: DICOM file has no pixel data")
    try:
        return ds.pixel_array
    except Exception as exc:
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and syntax.is_compressed:
            raise ImageReadError(
                f"{path}: pixel data compressed as {syntax.name} ({syntax}) could not be decoded "
                f"by the installed decoders ({_DECODERS}): {exc}"
            ) from exc
        raise ImageReadError(f"{path}: cannot decode DICOM pixel data ({exc})") from exc


_WHOLE_SLIDE = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
_MAX_VALUES = 2**30  # 4 GB as float32: more than any one image medfound reads whole


def _check_readable_whole(ds, path: Path) -> None:
    """Refuse, before decoding, what cannot be read as one image: DICOM whole-slide images (their
    frames are tiles of a gigapixel level) and anything above _MAX_VALUES values."""
    if str(ds.get("SOPClassUID", "")) == _WHOLE_SLIDE:
        raise ImageReadError(
            f"{path}: a DICOM whole-slide image (its frames are tiles); it cannot be read as one "
            "image, and tiling DICOM slides is not supported yet"
        )
    _check_value_count(_value_count(ds), path)


def _value_count(ds) -> int:
    values = 1
    for keyword in ("NumberOfFrames", "Rows", "Columns", "SamplesPerPixel"):
        values *= int(ds.get(keyword, 1) or 1)
    return values


def _check_value_count(values: int, path) -> None:
    if values > _MAX_VALUES:
        raise ImageReadError(
            f"{path}: {values:,} pixel values ({4 * values / 2**30:.0f} GB as float32) are too many "
            "to read as one image"
        )


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
    """Modality LUT, then VOI (radiographs only), then MONOCHROME1 inversion. Enhanced (multi-)frame
    files carry both LUTs per frame in their functional groups: those are applied frame by frame."""
    single = pixels.ndim == 2 and _frame_groups(ds, 1) is not None  # an enhanced file, one frame
    frames = pixels[None] if single else pixels
    groups = _frame_groups(ds, frames.shape[0]) if frames.ndim == 3 else None
    if groups is not None and (_has_frame_lut(groups, _RESCALE) or _has_frame_lut(groups, _WINDOW)):
        values, value_range = _frame_luts(frames, ds, groups, modality)
        values = values[0] if single else values
    else:
        values, value_range = _file_luts(pixels, ds, modality)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        lo, hi = value_range if value_range else (float(values.min()), float(values.max()))
        values = (lo + hi) - values
    return values, value_range


def _file_luts(pixels: np.ndarray, ds, modality: str | None):
    """The file's own modality LUT, and its VOI LUT or window for radiographs."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    values = apply_modality_lut(pixels, ds).astype(np.float32)
    if modality in _QUANTITATIVE:
        return values, None
    if ds.get("VOILUTSequence"):
        values = apply_voi_lut(values, ds, prefer_lut=True).astype(np.float32)
        return values, (0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1))
    if "WindowCenter" in ds and "WindowWidth" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=False).astype(np.float32)
    return values, _stored_range(ds)


def _frame_luts(frames: np.ndarray, ds, groups: list[tuple], modality: str | None):
    """Each frame's modality LUT and (radiographs) window, from its functional groups. Frames may
    rescale differently: windowed frames are brought to the first frame's range, unwindowed ones
    share the union of their ranges."""
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    views = [_frame_view(ds, g, (_RESCALE, _WINDOW)) for g in groups]
    values = np.stack(
        [apply_modality_lut(f, v) for f, v in zip(frames, views, strict=True)]
    ).astype(np.float32)
    if modality in _QUANTITATIVE:
        return values, None
    ranges = [_stored_range(v) for v in views]
    if not _has_frame_lut(groups, _WINDOW):
        return values, (min(lo for lo, _ in ranges), max(hi for _, hi in ranges))
    # the window of each frame, on values in its rescaled units (hence both items in the view)
    windowed = [apply_voi_lut(f, v, prefer_lut=False) for f, v in zip(values, views, strict=True)]
    low, high = ranges[0]
    values = np.stack(
        [
            low + (f - lo) * (high - low) / (hi - lo) if hi > lo else f
            for f, (lo, hi) in zip(windowed, ranges, strict=True)
        ]
    ).astype(np.float32)
    return values, (low, high)


_RESCALE = "PixelValueTransformationSequence"  # per-frame modality LUT (RescaleSlope/Intercept)
_WINDOW = "FrameVOILUTSequence"  # per-frame window (WindowCenter/Width)


def _frame_groups(ds, frames: int) -> list[tuple] | None:
    """Per frame, its (per-frame group, shared group) of an enhanced multi-frame file; None when the
    file has no per-frame functional groups for every frame."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return None
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
    return [(group, shared) for group in per_frame]


def _has_frame_lut(frame_groups: list[tuple], sequence: str) -> bool:
    return all(any(g is not None and g.get(sequence) for g in groups) for groups in frame_groups)


def _frame_view(ds, groups: tuple, sequences: tuple[str, ...]):
    """A copy of `ds`'s pixel attributes with the frame's items of `sequences` (per-frame first,
    else shared) as top-level attributes, so that pydicom's LUT functions apply that frame's LUTs."""
    from pydicom.dataset import Dataset

    view = Dataset()
    for keyword in (
        "BitsStored",
        "BitsAllocated",
        "PixelRepresentation",
        "PhotometricInterpretation",
        "RescaleSlope",  # top-level values, where a file has them: the frame's items win
        "RescaleIntercept",
    ):
        if keyword in ds:
            setattr(view, keyword, ds.get(keyword))
    for sequence in sequences:
        items = [g.get(sequence) for g in groups if g is not None and g.get(sequence)]
        for element in items[0][0] if items else []:
            view.add(element)
    return view


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


def _source_id(path: Path, ds, uids: UidPolicy | None) -> str:
    """`PATH#sop=ID`: the SOPInstanceUID as the policy shows it (a keyed hash unless kept)."""
    uid = ds.get("SOPInstanceUID")
    return f"{path}#sop={(uids or uid_policy())(str(uid))}" if uid else str(path)


class _NoValueEcho(logging.Filter):
    """Drops pydicom's value-validation messages: they quote the value, and for a malformed UID
    (common in real PACS exports) that is the raw SOP/Series Instance UID."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Invalid value for VR" not in record.getMessage()


def _quiet_values(read):
    """Run a reader without pydicom echoing element values to its log or as warnings."""

    @functools.wraps(read)
    def wrapper(*args, **kwargs):
        logger, echo_filter = logging.getLogger("pydicom"), _NoValueEcho()
        logger.addFilter(echo_filter)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Invalid value for VR")
                return read(*args, **kwargs)
        finally:
            logger.removeFilter(echo_filter)

    return wrapper


@_quiet_values
def read_dicom(path: Path, uids: UidPolicy | None = None) -> MedicalImage:
    """Read one DICOM file. Single-frame -> (C, rows, cols); multi-frame -> a (1, X, Y, Z) volume.

    A multi-frame volume is in RAS+ with its affine when the file gives each frame's position
    (enhanced CT/MR), else (columns, rows, frames) as stored (see `_multiframe_volume`).
    """
    ds = _read_dataset(path)
    _check_readable_whole(ds, path)
    pixels = _decode_pixels(ds, path)
    modality = str(ds.get("Modality")) if ds.get("Modality") else None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1))
    meta = _safe_meta(ds)
    spacing = _spacing_2d(ds)
    bits = int(ds.get("BitsStored", 8) or 8)
    if ds.get("PhotometricInterpretation") == "PALETTE COLOR" and samples == 1:
        from pydicom.pixels import apply_color_lut

        pixels, samples = apply_color_lut(pixels, ds), 3
        bits = int(ds.RedPaletteColorLookupTableDescriptor[2])  # the LUT entries' bits
    if samples == 3:
        # pydicom converts YBR colour spaces to RGB when decoding (its as_rgb default).
        rgb = pixels.astype(np.float32)
        value_range = (0.0, float(2**bits - 1))
        source_id = _source_id(path, ds, uids)
        if frames == 1:
            channels = np.moveaxis(rgb, -1, 0)
            return MedicalImage(channels, source_id, modality, spacing, value_range, meta)
        # a stack of colour frames (cine, secondary capture): (3, columns, rows, frames) as
        # grayscale multi-frame files are, each channel through the same geometry
        volumes = [_multiframe_volume(rgb[..., c], ds) for c in range(3)]
        _, spacing, affine = volumes[0]
        channels = np.stack([v[0] for v in volumes])
        return MedicalImage(channels, source_id, modality, spacing, value_range, meta, affine)
    if samples != 1:
        raise ImageReadError(f"{path}: unsupported SamplesPerPixel={samples}")
    values, value_range = _gray_pipeline(pixels, ds, modality)
    affine = None
    if frames > 1:
        values, spacing, affine = _multiframe_volume(values, ds)
    return MedicalImage(
        values[None], _source_id(path, ds, uids), modality, spacing, value_range, meta, affine
    )


@_quiet_values
def series_key(path: Path) -> str | None:
    """SeriesInstanceUID of a DICOM file (header only), or None if it has none or is unreadable."""
    try:
        ds = _read_dataset(path, header_only=True)
    except ImageReadError:
        return None
    uid = ds.get("SeriesInstanceUID")
    return str(uid) if uid else None


@_quiet_values
def read_dicom_series(paths: Sequence[Path], source_id: str) -> MedicalImage:
    """Stack the slices of one series into a (1, X, Y, Z) volume, ordered along the slice normal.

    With ImageOrientationPatient, ImagePositionPatient and PixelSpacing the volume is reoriented to
    RAS+ and carries its affine and spacing from the slice positions. Without them the volume is
    (columns, rows, slices) as stored, in position order (else InstanceNumber order), affine None,
    and its slice spacing comes from SpacingBetweenSlices or SliceThickness when present.
    """
    # headers first: sorted and checked (sizes, whole-slide images) before any pixel is read;
    # then one slice at a time, keeping only its values
    slices = [(_read_dataset(path, header_only=True), path) for path in paths]
    if not slices:
        raise ImageReadError(f"{source_id}: empty DICOM series")
    for ds, path in slices:
        _check_readable_whole(ds, path)
    _check_value_count(sum(_value_count(ds) for ds, _ in slices), source_id)
    slices.sort(key=lambda item: _slice_position(item[0]))
    arrays, value_range = [], None
    for _, path in slices:
        ds = _read_dataset(path)
        pixels = _decode_pixels(ds, path)
        if pixels.ndim != 2:
            raise ImageReadError(f"{path}: series slices must be single-frame grayscale")
        values, value_range = _gray_pipeline(pixels, ds, str(ds.get("Modality") or ""))
        arrays.append(values)
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise ImageReadError(f"{source_id}: slices of one series differ in size: {sorted(shapes)}")
    first = slices[0][0]
    modality = str(first.get("Modality")) if first.get("Modality") else None
    volume = np.stack([a.T for a in arrays], axis=-1)  # (i, j, k) = (columns, rows, slices)
    affine = _series_affine([ds for ds, _ in slices], source_id)
    if affine is None:
        spacing = _stack_spacing(first)
    else:
        volume, affine = to_canonical(volume, affine)
        spacing = voxel_spacing(affine)
    return MedicalImage(
        volume[None], source_id, modality, spacing, value_range, _safe_meta(first), affine
    )


def _series_affine(datasets: list, source_id: str) -> np.ndarray | None:
    """RAS affine of sorted series slices, or None when a slice lacks its plane geometry."""
    keys = ("ImageOrientationPatient", "ImagePositionPatient", "PixelSpacing")
    if any(ds.get(key) is None for ds in datasets for key in keys):
        return None
    first, last = datasets[0], datasets[-1]
    orientation = np.asarray(first.ImageOrientationPatient, float)
    for ds in datasets:
        if not np.allclose(np.asarray(ds.ImageOrientationPatient, float), orientation, atol=1e-4):
            raise ImageReadError(
                f"{source_id}: slices of one series differ in ImageOrientationPatient "
                f"({list(orientation)} and {list(ds.ImageOrientationPatient)}): not one volume"
            )
    _check_slice_steps(
        [np.asarray(ds.ImagePositionPatient, float) for ds in datasets], orientation, source_id
    )
    return dicom_affine(
        orientation,
        first.ImagePositionPatient,
        last.ImagePositionPatient,
        first.PixelSpacing,
        len(datasets),
        _slice_gap(first),
    )


def _check_slice_steps(positions: list, orientation, source_id: str) -> None:
    """Refuse slices at one position (echoes, phases, a repeated slice): they are not one volume; warn
    when the steps are uneven (a missing slice), since the affine then uses their mean, as ITK does."""
    if len(positions) < 2:
        return
    steps = np.diff(np.asarray(positions) @ slice_normal(orientation))
    if np.any(steps < 1e-3):
        raise ImageReadError(
            f"{source_id}: {int(np.sum(steps < 1e-3)) + 1} slices share a position along the "
            "normal (several echoes, phases or a repeated slice?): not one volume"
        )
    if steps.max() > 1.1 * steps.min():
        log.warning(
            "%s: uneven slice steps (%.3g to %.3g mm); the volume uses their mean",
            source_id, steps.min(), steps.max(),
        )  # fmt: skip


@_quiet_values
def uneven_slice_steps(paths: Sequence[Path], tolerance: float = 0.1) -> tuple[float, float] | None:
    """(smallest, largest) slice step in mm of a series whose steps differ by more than
    `tolerance` of the smallest (a missing slice, say); None when even or without positions.

    Reads headers only: a cheap check before work that needs true geometry (Genesis cubes), where
    reading the series itself only warns and uses the mean step.
    """
    datasets = [_read_dataset(path, header_only=True) for path in paths]
    keys = ("ImagePositionPatient", "ImageOrientationPatient")
    if len(datasets) < 3 or any(ds.get(key) is None for ds in datasets for key in keys):
        return None
    steps = np.diff(sorted(_slice_position(ds) for ds in datasets))
    if steps.min() > 1e-3 and steps.max() > (1 + tolerance) * steps.min():
        return float(steps.min()), float(steps.max())
    return None


def _multiframe_volume(values: np.ndarray, ds):
    """(frames, rows, cols) pixels of one file -> (volume, spacing, affine).

    Enhanced multi-frame files (CT, MR) state each frame's position in their functional groups: the
    frames are then sorted along the normal and the volume reoriented to RAS+ as a series is. Other
    multi-frame files (legacy NM, cine, ...) only give a slice gap, if any: their frames stay in file
    order as (columns, rows, frames), affine None.
    """
    volume = np.transpose(values, (2, 1, 0))  # (i, j, k) = (columns, rows, frames)
    geometry = _frame_geometry(ds, values.shape[0])
    if geometry is not None:
        orientation, positions, pixel_spacing = geometry
        order = np.argsort(positions @ slice_normal(orientation), kind="stable")
        affine = dicom_affine(
            orientation, positions[order[0]], positions[order[-1]], pixel_spacing, len(order)
        )
        if affine is not None:
            volume, affine = to_canonical(volume[..., order], affine)
            return volume, voxel_spacing(affine), affine
    return volume, _stack_spacing(ds), None


def _frame_geometry(ds, frames: int):
    """(ImageOrientationPatient, (frames, 3) positions, PixelSpacing) from the functional groups.

    None unless every frame has all three (per frame, or shared) and all share one orientation and
    pixel spacing.
    """
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if not per_frame or len(per_frame) != frames:
        return None
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]

    def attribute(group, sequence: str, name: str) -> list[float] | None:
        for source in (group, shared):
            items = source.get(sequence) if source is not None else None
            if items and items[0].get(name) is not None:
                return [float(v) for v in items[0].get(name)]
        return None

    orientations, positions, spacings = [], [], []
    for group in per_frame:
        orientations.append(attribute(group, "PlaneOrientationSequence", "ImageOrientationPatient"))
        positions.append(attribute(group, "PlanePositionSequence", "ImagePositionPatient"))
        spacings.append(attribute(group, "PixelMeasuresSequence", "PixelSpacing"))
    if any(v is None for v in (*orientations, *positions, *spacings)):
        return None
    if not (np.allclose(orientations, orientations[0]) and np.allclose(spacings, spacings[0])):
        return None
    return orientations[0], np.asarray(positions), spacings[0]


def _slice_gap(ds) -> float | None:
    gap = ds.get("SpacingBetweenSlices") or ds.get("SliceThickness")
    return float(gap) if gap else None


def _stack_spacing(ds) -> tuple[float, float, float] | None:
    """(column, row, slice) spacing of a stack whose slice positions are unknown: None without a gap."""
    spacing, gap = _spacing_2d(ds), _slice_gap(ds)
    return (spacing[1], spacing[0], gap) if spacing is not None and gap else None


def _slice_position(ds) -> float:
    """Position along the slice normal (from ImagePositionPatient), else the InstanceNumber."""
    position, orientation = ds.get("ImagePositionPatient"), ds.get("ImageOrientationPatient")
    if position is not None and orientation is not None:
        row, col = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
        return float(np.dot(np.cross(row, col), np.asarray(position, float)))
    return float(ds.get("InstanceNumber", 0) or 0)
