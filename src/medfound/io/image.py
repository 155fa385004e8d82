"""The one in-memory image type every reader returns."""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class MedicalImage:
    """An image as read from disk, before any model-specific preprocessing.

    Attributes:
        array: channels first, float32: (C, H, W) for 2D, (C, X, Y, Z) for 3D. Volumes come in one
            geometry whatever the format: axes in the closest RAS+ order (indices increase towards
            the patient's right, anterior, superior; see io/geometry.py) when the file states where
            voxels are, else (columns, rows, slices) as stored. C is 1 (grayscale) or 3 (RGB).
        source_id: what identifies the image in outputs: its path, plus `#sop=<ID>` for DICOM, where
            ID is the SOPInstanceUID as the UID policy shows it (a keyed hash unless kept; privacy.py).
        modality: DICOM modality code (CT, MR, CR, DX, ...) when the file says so, else None.
        spacing: physical size of a pixel/voxel per spatial axis in mm, when known.
        value_range: the (low, high) intensities that map to black and white (from the bit depth,
            the DICOM window or VOI LUT), or None when only the data itself can tell (floats, CT HU).
        meta: other non-identifying facts (format, bit depth, transfer syntax, photometric).
        affine: for volumes whose file gives their position, the 4x4 map from voxel indices of `array`
            (after reorientation) to RAS+ millimetres; None for 2D images and volumes without geometry.
    """

    array: np.ndarray
    source_id: str
    modality: str | None = None
    spacing: tuple[float, ...] | None = None
    value_range: tuple[float, float] | None = None
    meta: dict[str, str] = field(default_factory=dict)
    affine: np.ndarray | None = None

    @property
    def spatial_dims(self) -> int:
        """2 for an image, 3 for a volume."""
        return self.array.ndim - 1

    @property
    def channels(self) -> int:
        """1 for grayscale, 3 for RGB."""
        return self.array.shape[0]
