"""MIMIC-CXR-JPG (Johnson et al., 2019): the CheXpert-labeller CSV (one row per study) joined with
the metadata CSV (one row per image) on the study; images under root/files/pXX/pSUBJECT/sSTUDY/."""

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from medfound.data.chexpert import (
    CHEXPERT_14,
    Blank,
    Uncertain,
    checked_policies,
    observation_targets,
)
from medfound.data.labels import (
    FileImages,
    LabelTable,
    bad_rows_error,
    normalise_splits,
    read_csv_rows,
    require_columns,
)
from medfound.errors import ConfigError, first_items

log = logging.getLogger(__name__)


def mimic_image_path(root: str | Path, subject_id: str, study_id: str, dicom_id: str) -> str:
    """root/files/p{first two digits of the subject}/p{subject}/s{study}/{dicom}.jpg (a string:
    one Path per image would cost seconds over MIMIC's 377k images)."""
    return os.path.join(
        root, "files", f"p{subject_id[:2]}", f"p{subject_id}", f"s{study_id}", f"{dicom_id}.jpg"
    )


def read_mimic_cxr(
    chexpert_csv: str | Path,
    metadata_csv: str | Path,
    root: str | Path,
    *,
    observations: Sequence[str] = CHEXPERT_14,
    uncertain: Uncertain = "ignore",
    blank: Blank = "negative",
    views: Sequence[str] | Literal["all"] = ("PA", "AP"),
    split_csv: str | Path | None = None,
) -> LabelTable:
    """A multilabel LabelTable of MIMIC-CXR-JPG images, one row per image of the metadata CSV.

    - `chexpert_csv`: mimic-cxr-2.0.0-chexpert.csv(.gz) (subject_id, study_id, the 14 observations;
      the negbio CSV has the same layout). `uncertain` and `blank` as in `read_chexpert`.
    - `metadata_csv`: mimic-cxr-2.0.0-metadata.csv(.gz) (dicom_id, subject_id, study_id,
      ViewPosition, ...). Images whose ViewPosition is not in `views` (case ignored; "all": every
      image) are left out; so are images of studies the label CSV lacks, with a warning that
      counts them.
    - `root`: the folder holding `files/` (mimic-cxr-jpg/2.0.0).
    - `split_csv`: optional mimic-cxr-2.0.0-split.csv(.gz) (dicom_id, ..., split of train/validate/
      test -> "train"/"val"/"test"); every kept image must be in it.
    The patient is the subject_id. ConfigError for a study labelled twice, a study whose subject
    differs between the two CSVs, bad label cells, or kept images the split CSV lacks.
    """
    observations, uncertain_value, blank_value = checked_policies(observations, uncertain, blank)
    keep = {str(v).strip().upper() for v in _as_list(views)}
    if "ALL" in keep:  # "all", or ["all"] from a command line's list option
        keep = None
    if keep is not None and not keep:
        raise ConfigError("views: name at least one ViewPosition (PA, AP, LATERAL, ...) or 'all'")

    header, label_rows = read_csv_rows(chexpert_csv)
    require_columns(chexpert_csv, header, ["subject_id", "study_id", *observations])
    targets = observation_targets(
        chexpert_csv, label_rows, observations, uncertain_value, blank_value
    )
    study_row: dict[str, int] = {}
    doubled = []
    for r, (line, row) in enumerate(label_rows):
        if row["study_id"] in study_row:
            doubled.append((line, f"study {row['study_id']}"))
        study_row.setdefault(row["study_id"], r)
    if doubled:
        raise bad_rows_error(chexpert_csv, "label a study already labelled", doubled)

    header, meta_rows = read_csv_rows(metadata_csv)
    require_columns(
        metadata_csv,
        header,
        ["dicom_id", "subject_id", "study_id"] + ([] if keep is None else ["ViewPosition"]),
    )
    kept: list[tuple[dict[str, str], int]] = []
    unlabelled = 0
    mismatched = []
    for line, row in meta_rows:
        if keep is not None and row["ViewPosition"].upper() not in keep:
            continue
        r = study_row.get(row["study_id"])
        if r is None:
            unlabelled += 1
            continue
        labelled_subject = label_rows[r][1]["subject_id"]
        if labelled_subject != row["subject_id"]:
            where = f"{labelled_subject} in {Path(chexpert_csv).name}"
            mismatched.append(
                (line, f"study {row['study_id']}: subject {row['subject_id']} here, {where}")
            )
        kept.append((row, r))
    if mismatched:
        raise bad_rows_error(metadata_csv, "disagree with the label CSV", mismatched)
    if unlabelled:
        log.warning(
            "%s: %d image(s) of studies without labels in %s left out",
            metadata_csv,
            unlabelled,
            chexpert_csv,
        )
    if not kept:
        raise ConfigError(
            f"{metadata_csv}: no labelled images"
            + ("" if keep is None else f" with ViewPosition {', '.join(sorted(keep))}")
        )

    root = Path(root).resolve()
    paths = [
        mimic_image_path(root, row["subject_id"], row["study_id"], row["dicom_id"])
        for row, _ in kept
    ]
    patients = np.asarray([row["subject_id"] for row, _ in kept], dtype=str)
    splits = None
    if split_csv is not None:
        splits = _image_splits(split_csv, [row["dicom_id"] for row, _ in kept])
    return LabelTable(
        FileImages(paths, resolved=True),
        targets[[r for _, r in kept]],
        "multilabel",
        observations,
        patients,
        splits,
    )


def _as_list(views) -> list[str]:
    return [views] if isinstance(views, str) else list(views)


def _image_splits(split_csv: str | Path, dicom_ids: list[str]) -> np.ndarray:
    header, rows = read_csv_rows(split_csv)
    require_columns(split_csv, header, ["dicom_id", "split"])
    split_of = {row["dicom_id"]: row["split"] for _, row in rows}
    absent = [d for d in dicom_ids if d not in split_of]
    if absent:
        raise ConfigError(
            f"{split_csv}: {len(absent)} image(s) have no split: {first_items(absent)}"
        )
    return normalise_splits([split_of[d] for d in dicom_ids], str(split_csv))
