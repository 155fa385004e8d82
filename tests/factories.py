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


def write_slide(
    path: Path,
    size: int = 2048,
    tissue: tuple[int, int, int, int] = (512, 512, 1536, 1536),
    mpp: float | None = 0.25,
    levels: int = 3,
    compression: str | None = "zlib",
    gray12: bool = False,
    subifds: bool = True,
) -> Path:
    """A pyramidal tiled TIFF (levels halving in size, in SubIFDs as converted slides store them):
    near-white glass with a pink-purple tissue square `tissue` (x0, y0, x1, y1 in level-0 pixels)
    holding small white holes, plus a tiny stained speck outside it. `mpp` None: no resolution.
    `gray12`: the same as one 12-bit gray channel (value * 16) in 16-bit words. `subifds` False:
    levels as successive pages (the layout OpenSlide's generic TIFF reader takes)."""
    import tifffile

    rng = np.random.default_rng(0)
    image = np.full((size, size, 3), 242, np.uint8)
    image += rng.integers(0, 6, image.shape, dtype=np.uint8)  # glass is not flat white
    x0, y0, x1, y1 = tissue
    h, w = y1 - y0, x1 - x0
    stain = np.stack(
        [
            rng.integers(150, 200, (h, w)),
            rng.integers(60, 110, (h, w)),
            rng.integers(130, 180, (h, w)),
        ],
        axis=-1,
    ).astype(np.uint8)
    stain[h // 3 : h // 3 + 12, w // 2 : w // 2 + 12] = 245  # a hole (a lumen, say)
    image[y0:y1, x0:x1] = stain
    image[40:46, 40:46] = (170, 80, 150)  # a speck of stain: not tissue
    options = {"tile": (256, 256), "photometric": "rgb", "compression": compression}
    if gray12:
        image = (image.mean(axis=-1) * 16).astype(np.uint16)
        options["photometric"] = "minisblack"
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for level in range(levels):
            f = 2**level
            kwargs = dict(options)
            if mpp is not None:
                kwargs |= {"resolution": (1e4 / (mpp * f),) * 2, "resolutionunit": "CENTIMETER"}
            if level == 0 and subifds:
                kwargs["subifds"] = levels - 1
            else:
                kwargs["subfiletype"] = 1
            tif.write(image[::f, ::f], **kwargs)
    return path
