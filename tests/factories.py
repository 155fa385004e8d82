"""Generated test files: DICOM with chosen attributes, NIfTI, PNG. No real patient data anywhere."""

from pathlib import Path

import numpy as np
from PIL import Image

# Every identifying attribute a generated DICOM carries (PS3.15 Basic Profile examples): none may
# reach an output, a log or a shared file.
PHI = {
    "PatientName": "Doe^Jane",
    "PatientID": "PID-998877",
    "PatientBirthDate": "19700101",
    "OtherPatientIDs": "OPID-445566",
    "PatientAddress": "12 Elm Street Springfield",
    "AccessionNumber": "ACC-20240517-77",
    "InstitutionName": "Saint Example Hospital",
    "ReferringPhysicianName": "Who^Doctor",
    "PerformingPhysicianName": "Grey^Meredith",
    "OperatorsName": "Tech^Tina",
    "StudyID": "STUDY-31337",
    "StudyDate": "20240517",
    "StudyTime": "134501",
    "DeviceSerialNumber": "SN-A1B2C3D4",
    "StationName": "CTSTATION-7",
    "StudyInstanceUID": "1.2.826.0.1.999.12345.1",
}


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    modality: str = "CT",
    photometric: str = "MONOCHROME2",
    signed: bool = False,
    bits: int = 16,
    **attributes,
) -> Path:
    """Write an uncompressed DICOM file; `pixels` is (rows, cols) or (frames, rows, cols)."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    for key, value in PHI.items():
        setattr(ds, key, value)
    ds.SeriesInstanceUID = attributes.pop("SeriesInstanceUID", generate_uid())
    frames = pixels.shape[0] if pixels.ndim == 3 else 1
    ds.Rows, ds.Columns = pixels.shape[-2:]
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 16 if bits > 8 else 8
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    dtype = {(False, 8): np.uint8, (False, 16): np.uint16, (True, 16): np.int16}[
        (signed, ds.BitsAllocated)
    ]
    ds.PixelData = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(str(path), enforce_file_format=True)
    return path


def write_nifti(path: Path, volume: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    """Write a NIfTI volume with the given voxel spacing."""
    import nibabel as nib

    affine = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(volume.astype(np.float32), affine), str(path))
    return path


def write_png(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write a PNG from an array (uint8 gray/RGB/RGBA or uint16 gray)."""
    Image.fromarray(array, mode=mode).save(path) if mode else Image.fromarray(array).save(path)
    return path


def image_folder(folder: Path, n: int = 5, size: int = 40, seed: int = 0) -> list[Path]:
    """n random RGB PNGs in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    return [
        write_png(folder / f"img{i:02d}.png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
        for i in range(n)
    ]


def tissue_tiles(folder: Path, size: int = 48) -> list[Path]:
    """32 real RGB tiles (a 4x4 grid each of scikit-image's IHC slide and fundus photograph)."""
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, image in (("ihc", data.immunohistochemistry()), ("retina", data.retina())):
        h, w = image.shape[:2]
        for i in range(4):
            for j in range(4):
                tile = image[i * h // 4 : (i + 1) * h // 4, j * w // 4 : (j + 1) * w // 4]
                resized = np.asarray(Image.fromarray(tile).resize((size, size)))
                paths.append(write_png(folder / f"{name}-{i}{j}.png", resized))
    return paths


def axis_aligned_affine(spacing, origin) -> np.ndarray:
    """A 4x4 voxel -> RAS mm affine with `spacing` along the axes and voxel (0, 0, 0) at `origin`."""
    affine = np.diag([*map(float, spacing), 1.0])
    affine[:3, 3] = origin
    return affine


def asymmetric_ct(shape, seed: int = 7) -> np.ndarray:
    """int16 HU values with no symmetry (a gradient per axis plus noise): any flip or swap shows."""
    i, j, k = np.indices(shape)
    noise = np.random.default_rng(seed).integers(0, 50, shape)
    return (-900 + 40 * i + 17 * j + 60 * k + noise).astype(np.int16)
