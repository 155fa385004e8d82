"""CheXpert (Irvin et al., 2019): chest X-rays with 14 observations labelled 1 (positive), 0
(negative), -1 (uncertain) or blank (not mentioned in the report), as in its train.csv/valid.csv.

The label policies here are shared with MIMIC-CXR-JPG (data/mimic.py), whose labels come from the
same CheXpert labeller.
"""

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from medfound.data.labels import (
    FileImages,
    LabelTable,
    bad_rows_error,
    read_csv_rows,
    require_columns,
)
from medfound.errors import ConfigError, first_items

CHEXPERT_14 = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
# The five observations of the CheXpert competition (and of REMEDIS's CheXpert results).
CHEXPERT_COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")

Uncertain = Literal["ignore", "ones", "zeros"]
Blank = Literal["negative", "ignore"]
_UNCERTAIN = {"ignore": np.nan, "ones": 1.0, "zeros": 0.0}
_BLANK = {"negative": 0.0, "ignore": np.nan}
_VIEWS = {"frontal": ("Frontal",), "lateral": ("Lateral",), "all": ("Frontal", "Lateral")}
_PATIENT = re.compile(r"patient\d+")


def checked_policies(
    observations: Sequence[str], uncertain: str, blank: str
) -> tuple[tuple[str, ...], float, float]:
    """The observations as a tuple and the values that uncertain and blank cells become;
    ConfigError for an observation CheXpert does not have or an unknown policy."""
    if isinstance(observations, str):
        observations = [observations]
    observations = tuple(observations)
    unknown = [o for o in observations if o not in CHEXPERT_14]
    if unknown or not observations or len(set(observations)) != len(observations):
        raise ConfigError(
            f"observations {list(observations)}: need distinct names among the CheXpert 14 "
            f"({', '.join(CHEXPERT_14)})"
            + (f"; unknown: {first_items(unknown)}" if unknown else "")
        )
    if uncertain not in _UNCERTAIN:
        raise ConfigError(f"uncertain: {uncertain!r} is not one of {', '.join(_UNCERTAIN)}")
    if blank not in _BLANK:
        raise ConfigError(f"blank: {blank!r} is not one of {', '.join(_BLANK)}")
    return observations, _UNCERTAIN[uncertain], _BLANK[blank]


def observation_targets(
    csv_path: str | Path,
    rows: list[tuple[int, dict[str, str]]],
    observations: tuple[str, ...],
    uncertain_value: float,
    blank_value: float,
) -> np.ndarray:
    """float32 (N, K) targets from CheXpert-style cells: 1 -> 1, 0 -> 0, -1 -> `uncertain_value`,
    blank -> `blank_value`; ConfigError listing the rows with any other cell."""
    meaning = {1.0: 1.0, 0.0: 0.0, -1.0: uncertain_value}
    targets = np.empty((len(rows), len(observations)), dtype=np.float32)
    bad = []
    for r, (line, row) in enumerate(rows):
        for c, name in enumerate(observations):
            cell = row[name]
            if not cell:
                targets[r, c] = blank_value
                continue
            try:
                targets[r, c] = meaning[float(cell)]
            except (ValueError, KeyError):
                bad.append((line, f"{name}={cell!r}"))
    if bad:
        raise bad_rows_error(csv_path, "with a label other than 1, 0, -1 or blank", bad)
    return targets


def read_chexpert(
    csv_path: str | Path,
    root: str | Path | None = None,
    *,
    observations: Sequence[str] = CHEXPERT_14,
    uncertain: Uncertain = "ignore",
    blank: Blank = "negative",
    views: Literal["frontal", "lateral", "all"] = "frontal",
) -> LabelTable:
    """A multilabel LabelTable from CheXpert's train.csv or valid.csv (the 'small' or full release).

    Labels (classes in the order of `observations`; `CHEXPERT_COMPETITION` for the usual five):
    - `uncertain` (-1): "ignore" -> NaN, masked out of the loss and the metrics; "ones" -> 1
      (U-Ones); "zeros" -> 0 (U-Zeros).
    - `blank` (the report does not mention the observation): "negative" -> 0 (the default, as in
      the CheXpert baselines and the U-Ones/U-Zeros conventions: not mentioned means absent), or
      "ignore" -> NaN.
    `views` keeps the rows whose `Frontal/Lateral` column is Frontal, Lateral, or both ("all").

    Images: the CSV's `Path` cells look like `CheXpert-v1.0-small/train/patient00001/study1/
    view1_frontal.jpg`, relative to the folder that holds the dataset folder. With `root`, paths are
    taken relative to `root`. Without it, the first row decides: its image is looked for under the
    CSV's grandparent (the layout as released), then the CSV's folder, then the CSV's folder without
    the path's first component (a renamed dataset folder); when none of those exists, the grandparent
    is used if the first component is the CSV's folder name, else the CSV's folder without it
    (the CSV's folder as is for bare file names).
    Missing images are reported by `check_images_exist`.

    The patient is the path's `patientNNNNN` component. Splits are None (train.csv and valid.csv
    each are one table; a split within one is made by patient with `assign_splits`).
    """
    csv_path = Path(csv_path).resolve()
    observations, uncertain_value, blank_value = checked_policies(observations, uncertain, blank)
    if views not in _VIEWS:
        raise ConfigError(f"views: {views!r} is not one of {', '.join(_VIEWS)}")
    header, rows = read_csv_rows(csv_path)
    require_columns(csv_path, header, ["Path", *observations])
    if views != "all":
        require_columns(csv_path, header, ["Frontal/Lateral"])
        odd = [
            (line, repr(row["Frontal/Lateral"]))
            for line, row in rows
            if row["Frontal/Lateral"] not in _VIEWS["all"]
        ]
        if odd:
            raise bad_rows_error(
                csv_path, "with a 'Frontal/Lateral' other than Frontal or Lateral", odd
            )
        rows = [(line, row) for line, row in rows if row["Frontal/Lateral"] in _VIEWS[views]]
    if not rows:
        raise ConfigError(f"{csv_path}: no {views} images")
    blank_paths = [(line, "") for line, row in rows if not row["Path"]]
    if blank_paths:
        raise bad_rows_error(csv_path, "with no 'Path'", blank_paths)

    base, drop = _path_base(csv_path, rows[0][1]["Path"], root)
    base_text = str(base)
    paths = []
    patients = []
    no_patient = []
    for line, row in rows:
        parts = _parts(row["Path"])
        patient = next((p for p in parts if _PATIENT.fullmatch(p)), None)
        if patient is None:
            no_patient.append((line, row["Path"]))
        patients.append(patient)
        if os.path.isabs(row["Path"]):
            paths.append(str(Path(row["Path"]).resolve()))
        else:  # string joins: a Path and a realpath per row cost seconds on 224k rows
            paths.append(os.path.normpath(os.path.join(base_text, *parts[drop:])))
    if no_patient:
        raise bad_rows_error(csv_path, "with no patientNNNNN folder in 'Path'", no_patient)
    targets = observation_targets(csv_path, rows, observations, uncertain_value, blank_value)
    return LabelTable(
        FileImages(paths, resolved=True),
        targets,
        "multilabel",
        observations,
        np.asarray(patients),
        None,
    )


def _parts(text: str) -> list[str]:
    """The components of a `Path` cell (either slash; empty and "." components dropped)."""
    return [p for p in text.replace("\\", "/").split("/") if p not in ("", ".")]


def _path_base(csv_path: Path, first: str, root: str | Path | None) -> tuple[Path, int]:
    """The folder the `Path` cells are relative to, and how many leading components to drop."""
    if root is not None:
        return Path(root).resolve(), 0
    parts = _parts(first)
    candidates = [(csv_path.parent.parent, 0), (csv_path.parent, 0)]
    if len(parts) > 1:
        candidates.append((csv_path.parent, 1))
    for base, drop in candidates:
        if base.joinpath(*parts[drop:]).is_file():
            return base, drop
    if len(parts) < 2:
        return csv_path.parent, 0
    if parts[0] == csv_path.parent.name:
        return csv_path.parent.parent, 0
    return csv_path.parent, 1
