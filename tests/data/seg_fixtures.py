"""Generated segmentation data in real layouts: 2D image/mask pairs (NAME_mask.png, CSV), MSD task
folders (dataset.json, 4D multi-channel NIfTI images, 3D labels) and nnU-Net channel files."""

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

# Voxel (i, j, k) of the stored array -> mm: i runs to the patient's left (-x), j to superior (+z),
# k to posterior (-y), with unequal spacings and an origin away from 0: a reader that ignored the
# orientation would swap and flip axes.
STORED_AFFINE = np.array(
    [
        [-1.5, 0.0, 0.0, 40.0],
        [0.0, 0.0, -2.0, 30.0],
        [0.0, 1.0, 0.0, -20.0],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
MSD_LABELS = {"0": "background", "1": "edema", "2": "tumour"}
MSD_MODALITIES = {"0": "FLAIR", "1": "T1w", "2": "T1gd", "3": "T2w"}


def disc_pair(shape=(24, 32), centre=(10, 14), radius=5, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A uint8 gray image with a bright noisy disc and its 0/1 mask."""
    rows, cols = np.indices(shape)
    mask = ((rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2).astype(np.uint8)
    noise = np.random.default_rng(seed).integers(0, 40, shape)
    return (30 + 150 * mask + noise).astype(np.uint8), mask


def save(path: Path, array: np.ndarray, mode: str | None = None) -> Path:
    """Write an image file with Pillow (format from the suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (Image.fromarray(array, mode=mode) if mode else Image.fromarray(array)).save(path)
    return path


def write_pairs_2d(folder: Path, names=("a", "b", "c"), shape=(24, 32)) -> dict[str, np.ndarray]:
    """NAME.png with NAME_mask.png (0/255) for each name; returns each name's 0/1 mask."""
    masks = {}
    for n, name in enumerate(names):
        image, mask = disc_pair(shape, centre=(8 + 2 * n, 10 + 3 * n), seed=n)
        save(folder / f"{name}.png", image)
        save(folder / f"{name}_mask.png", mask * 255)
        masks[name] = mask
    return masks


def write_csv(path: Path, rows: list[dict]) -> Path:
    """A CSV with the rows' keys as columns."""
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def save_nifti(path: Path, array: np.ndarray, affine=STORED_AFFINE) -> Path:
    """Write a NIfTI file of `array` as stored (the dtype kept) with `affine`."""
    import nibabel as nib

    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(array, affine), str(path))
    return path


def msd_case(shape=(12, 10, 8), channels=4, seed=0) -> tuple[np.ndarray, np.ndarray]:
    """A (X, Y, Z, C) float32 image whose channels have unrelated scales and a 3D uint8 label with
    classes 1 (a box) and 2 (one voxel inside it), as stored."""
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[3:7, 2:6, 2:5] = 1
    label[4, 3, 3] = 2
    image = np.stack(
        [(10.0**c) * (rng.random(shape) + 2 * label) for c in range(channels)], axis=-1
    ).astype(np.float32)
    return image, label


def write_msd_task(
    folder: Path, names=("BRATS_001", "BRATS_002", "BRATS_003"), shape=(12, 10, 8), channels=4
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """An MSD task folder: dataset.json, imagesTr/NAME.nii.gz (4D), labelsTr/NAME.nii.gz, one test
    image in imagesTs/, and the '._NAME' files the MSD archives carry. Returns the stored arrays."""
    cases = {}
    for n, name in enumerate(names):
        image, label = msd_case(shape, channels, seed=n)
        save_nifti(folder / "imagesTr" / f"{name}.nii.gz", image)
        save_nifti(folder / "labelsTr" / f"{name}.nii.gz", label)
        (folder / "imagesTr" / f"._{name}.nii.gz").write_bytes(b"\0" * 16)
        cases[name] = (image, label)
    test_image, _ = msd_case(shape, channels, seed=99)
    save_nifti(folder / "imagesTs" / "BRATS_900.nii.gz", test_image)
    meta = {
        "name": "BRATS",
        "modality": {k: v for k, v in list(MSD_MODALITIES.items())[:channels]},
        "labels": MSD_LABELS,
        "numTraining": len(names),
        "training": [
            {"image": f"./imagesTr/{name}.nii.gz", "label": f"./labelsTr/{name}.nii.gz"}
            for name in names
        ],
        "test": ["./imagesTs/BRATS_900.nii.gz"],
    }
    (folder / "dataset.json").write_text(json.dumps(meta, indent=2))
    return cases


def write_nnunet_folder(
    folder: Path, names=("case_a", "case_b"), shape=(12, 10, 8), channels=2
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """imagesTr/NAME_0000.nii.gz, NAME_0001.nii.gz, ... (3D each) and labelsTr/NAME.nii.gz."""
    cases = {}
    for n, name in enumerate(names):
        image, label = msd_case(shape, channels, seed=n)
        for c in range(channels):
            save_nifti(folder / "imagesTr" / f"{name}_{c:04d}.nii.gz", image[..., c])
        save_nifti(folder / "labelsTr" / f"{name}.nii.gz", label)
        cases[name] = (image, label)
    return cases
