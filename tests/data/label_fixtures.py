"""Generated labelled datasets in their real layouts (CheXpert, MIMIC-CXR-JPG, PatchCamelyon, label CSVs,
class folders), tiny: a few 16-32 px images each. No real patient data anywhere."""

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from medfound.data.chexpert import CHEXPERT_14

# The cells CheXpert's labeller writes: positive, negative, uncertain, not mentioned.
CELLS = ("1.0", "0.0", "-1.0", "")


def write_gray(path: Path, seed: int, size: int = 16, suffix_format: str | None = None) -> Path:
    """A random 8-bit grayscale image (PNG or JPEG by suffix)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=suffix_format)
    return path


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False) -> Path:
    """A CSV file (gzip-compressed when `gz`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if gz else open
    with opener(path, "wt", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(header)
        out.writerows(rows)
    return path


# --- CheXpert ----------------------------------------------------------------------------------

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_14]


@dataclass
class ChexpertRow:
    patient: int
    study: int
    view: int
    frontal: bool
    cells: dict[str, str] = field(default_factory=dict)  # observation -> cell as written

    def relative(self, folder: str) -> str:
        kind = "frontal" if self.frontal else "lateral"
        return (
            f"{folder}/train/patient{self.patient:05d}/study{self.study}/view{self.view}_{kind}.jpg"
        )


def chexpert_rows(seed: int = 0, patients: int = 4) -> list[ChexpertRow]:
    """Rows for `patients` patients: 1-2 studies each, a frontal view and sometimes a lateral one;
    every observation cell drawn from 1.0, 0.0, -1.0 and blank."""
    rng = np.random.default_rng(seed)
    rows = []
    for patient in range(1, patients + 1):
        for study in range(1, int(rng.integers(1, 3)) + 1):
            views = [True] + ([False] if rng.random() < 0.6 else [])
            for view, frontal in enumerate(views, start=1):
                cells = {name: CELLS[int(rng.integers(0, 4))] for name in CHEXPERT_14}
                rows.append(ChexpertRow(patient, study, view, frontal, cells))
    return rows


def write_chexpert(
    base: Path,
    rows: list[ChexpertRow],
    folder: str = "CheXpert-v1.0-small",
    csv_name: str = "train.csv",
    path_prefix: str | None = None,
) -> Path:
    """base/FOLDER/train.csv and the JPEGs it names, as released: `Path` cells start with
    `path_prefix` (default FOLDER), relative to `base`."""
    prefix = path_prefix or folder
    records = []
    for i, row in enumerate(rows):
        write_gray(base / row.relative(folder), seed=i, suffix_format="JPEG")
        records.append(
            [
                row.relative(prefix),
                "Female" if i % 2 else "Male",
                str(40 + i),
                "Frontal" if row.frontal else "Lateral",
                "AP" if row.frontal else "",
                *(row.cells[name] for name in CHEXPERT_14),
            ]
        )
    return write_csv(base / folder / csv_name, CHEXPERT_HEADER, records)


# --- MIMIC-CXR-JPG -----------------------------------------------------------------------------

MIMIC_OBSERVATIONS = sorted(CHEXPERT_14)  # the released CSV lists them alphabetically
METADATA_HEADER = [
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
]

# Rows, Columns, StudyDate, StudyTime, and the three code meanings (values as the release writes them).
OTHER_METADATA = [16, 16, 21800506, 213014.531, "CHEST (PA AND LAT)", "postero-anterior", "Erect"]


@dataclass
class MimicImage:
    dicom_id: str
    subject_id: str
    study_id: str
    view: str  # ViewPosition
    split: str  # as the split CSV writes it: train, validate, test


@dataclass
class MimicFixture:
    root: Path  # holds files/
    chexpert_csv: Path
    metadata_csv: Path
    split_csv: Path
    images: list[MimicImage]
    labels: dict[str, dict[str, str]]  # study_id -> observation -> cell
    subject_of_study: dict[str, str]


def write_mimic(root: Path, seed: int = 0, subjects: int = 4, unlabelled_study: bool = True):
    """MIMIC-CXR-JPG 2.0.0 in its layout: files/pXX/pSUBJECT/sSTUDY/DICOM.jpg and the three gzipped
    CSVs. Studies have 1-3 images with ViewPosition among PA, AP, LATERAL and blank; with
    `unlabelled_study`, one extra study has images but no label row."""
    rng = np.random.default_rng(seed)
    images: list[MimicImage] = []
    labels: dict[str, dict[str, str]] = {}
    subject_of_study = {}
    splits = ("train", "validate", "test")
    for s in range(subjects):
        subject = str(10000032 + 1000 * s + 7 * (s % 3) * 1000000)
        for t in range(int(rng.integers(1, 3))):
            study = str(50000000 + 1000 * s + t)
            subject_of_study[study] = subject
            labels[study] = {name: CELLS[int(rng.integers(0, 4))] for name in CHEXPERT_14}
            for v in range(int(rng.integers(1, 4))):
                view = ("PA", "AP", "LATERAL", "")[int(rng.integers(0, 4))]
                dicom = f"{s:02x}{t:02x}{v:02x}" + "-" + "ab12cd34" * 2
                images.append(MimicImage(dicom, subject, study, view, splits[s % 3]))
    if unlabelled_study:
        subject_of_study["59999999"] = images[0].subject_id
        images.append(
            MimicImage("ffff-unlabelled", images[0].subject_id, "59999999", "PA", "train")
        )
    for i, image in enumerate(images):
        path = (
            root
            / "files"
            / f"p{image.subject_id[:2]}"
            / f"p{image.subject_id}"
            / f"s{image.study_id}"
            / f"{image.dicom_id}.jpg"
        )
        write_gray(path, seed=i, suffix_format="JPEG")
    chexpert_csv = write_csv(
        root / "mimic-cxr-2.0.0-chexpert.csv.gz",
        ["subject_id", "study_id", *MIMIC_OBSERVATIONS],
        [
            [subject_of_study[study], study, *(cells[name] for name in MIMIC_OBSERVATIONS)]
            for study, cells in labels.items()
        ],
        gz=True,
    )
    metadata_csv = write_csv(
        root / "mimic-cxr-2.0.0-metadata.csv.gz",
        METADATA_HEADER,
        [
            [i.dicom_id, i.subject_id, i.study_id, "CHEST (PA AND LAT)", i.view, *OTHER_METADATA]
            for i in images
        ],
        gz=True,
    )
    split_csv = write_csv(
        root / "mimic-cxr-2.0.0-split.csv.gz",
        ["dicom_id", "study_id", "subject_id", "split"],
        [[i.dicom_id, i.study_id, i.subject_id, i.split] for i in images],
        gz=True,
    )
    return MimicFixture(
        root, chexpert_csv, metadata_csv, split_csv, images, labels, subject_of_study
    )


# --- PatchCamelyon -----------------------------------------------------------------------------


def write_pcam(
    folder: Path, counts: dict[str, int] | None = None, size: int = 32, seed: int = 0
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """camelyonpatch_level_2_split_{split}_{x,y}.h5 as released (x: uint8 (N, H, W, 3), y: uint8
    (N, 1, 1, 1)), with `size` px patches. Returns split -> (x, y) as written."""
    import h5py

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (counts or {"train": 6, "valid": 3, "test": 3}).items():
        x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (n, 1, 1, 1), dtype=np.uint8)
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_x.h5", "w") as fh:
            fh.create_dataset("x", data=x, chunks=(1, size, size, 3))
        with h5py.File(folder / f"camelyonpatch_level_2_split_{split}_y.h5", "w") as fh:
            fh.create_dataset("y", data=y)
        written[split] = (x, y)
    return written
