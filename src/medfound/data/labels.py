"""Classification labels: where the images are (`ImageStore`), what they are (`LabelTable`), and the
generic readers (a label CSV, one folder per class).

Targets follow one layout for every source: multiclass -> int64 (N,) class indices; multilabel ->
float32 (N, K) of 1/0 with NaN for "unknown" (masked out of losses and metrics).
"""

import csv
import gzip
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol, runtime_checkable

import numpy as np

from medfound.errors import ConfigError, first_items
from medfound.io.image import MedicalImage
from medfound.io.readers import is_supported, read_image

log = logging.getLogger(__name__)

Kind = Literal["multiclass", "multilabel"]
SPLITS = ("train", "val", "test")
# Spellings of the three splits seen in public datasets (MIMIC-CXR writes "validate", PCam "valid").
SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validate": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


@runtime_checkable
class ImageStore(Protocol):
    """How the items of a LabelTable are read. Picklable: DataLoader workers receive it."""

    def __len__(self) -> int: ...

    def read(self, i: int) -> MedicalImage:
        """Item i as read from disk; raises ImageReadError for a bad item."""
        ...

    def item_id(self, i: int) -> str:
        """What names item i in outputs (a resolved path, or `file.h5#17`)."""
        ...


class FileImages:
    """One image file per item, read with medfound.io.read_image; the id is the resolved path.

    `resolved=True` takes the paths as already absolute and resolved (readers that join a resolved
    folder with plain components skip a realpath per file: seconds for CheXpert's 224k images).
    """

    def __init__(self, paths: Sequence[str | Path], *, resolved: bool = False):
        self.paths = tuple(Path(p) if resolved else Path(p).resolve() for p in paths)

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, i: int) -> MedicalImage:
        return read_image(self.paths[i])

    def item_id(self, i: int) -> str:
        return str(self.paths[i])

    def subset(self, indices: Sequence[int]) -> "FileImages":
        """The items at `indices`, in that order."""
        return FileImages([self.paths[int(i)] for i in indices], resolved=True)

    def missing(self) -> list[str]:
        """The paths that are not files."""
        return [str(p) for p in self.paths if not p.is_file()]


class SubsetImages:
    """The items of another store at `indices`: for stores without a `subset` of their own."""

    def __init__(self, store: ImageStore, indices: Sequence[int]):
        self.store = store
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    def read(self, i: int) -> MedicalImage:
        return self.store.read(int(self.indices[i]))

    def item_id(self, i: int) -> str:
        return self.store.item_id(int(self.indices[i]))


def subset_store(store: ImageStore, indices: Sequence[int]) -> ImageStore:
    """The items of `store` at `indices`, through the store's own `subset` when it has one."""
    own = getattr(store, "subset", None)
    return own(indices) if own is not None else SubsetImages(store, indices)


@dataclass
class LabelTable:
    """Images with their classification targets, patients and (when the data give them) splits.

    targets: multiclass int64 (N,) in [0, K); multilabel float32 (N, K) of 1/0, NaN = unknown.
    patients: str (N,), the item id where the data name no patient.
    splits: str (N,) of "train"/"val"/"test" when the data give splits, else None.
    """

    images: ImageStore
    targets: np.ndarray
    kind: Kind
    classes: tuple[str, ...]
    patients: np.ndarray
    splits: np.ndarray | None = None

    def __post_init__(self) -> None:
        n = len(self.images)
        self.classes = tuple(str(c) for c in self.classes)
        self.patients = np.asarray(self.patients, dtype=str)
        k = len(self.classes)
        if self.kind == "multiclass":
            self.targets = np.asarray(self.targets, dtype=np.int64)
            if self.targets.shape != (n,):
                raise ValueError(f"multiclass targets must be ({n},), got {self.targets.shape}")
            if n and (self.targets.min() < 0 or self.targets.max() >= k):
                raise ValueError(f"multiclass targets must lie in [0, {k})")
        elif self.kind == "multilabel":
            self.targets = np.asarray(self.targets, dtype=np.float32)
            if self.targets.shape != (n, k):
                raise ValueError(f"multilabel targets must be ({n}, {k}), got {self.targets.shape}")
            known = self.targets[~np.isnan(self.targets)]
            if not np.isin(known, (0.0, 1.0)).all():
                raise ValueError("multilabel targets must be 0, 1 or NaN")
        else:
            raise ValueError(f"kind must be 'multiclass' or 'multilabel', got {self.kind!r}")
        if self.patients.shape != (n,):
            raise ValueError(f"patients must be ({n},), got {self.patients.shape}")
        if self.splits is not None:
            self.splits = np.asarray(self.splits, dtype=str)
            if self.splits.shape != (n,) or not np.isin(self.splits, SPLITS).all():
                raise ValueError(f"splits must be ({n},) of {SPLITS}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def ids(self) -> list[str]:
        """The item ids, in order."""
        return [self.images.item_id(i) for i in range(len(self.images))]

    def subset(self, indices: Sequence[int]) -> "LabelTable":
        """The items at `indices` (in that order) as a table of their own."""
        idx = np.asarray(indices, dtype=np.int64)
        return LabelTable(
            images=subset_store(self.images, idx),
            targets=self.targets[idx],
            kind=self.kind,
            classes=self.classes,
            patients=self.patients[idx],
            splits=None if self.splits is None else self.splits[idx],
        )

    def describe(self) -> dict:
        """Counts for a summary: items, patients, per class (multiclass: items of the class;
        multilabel: positive / negative / unknown), and items per split when the data give splits."""
        if self.kind == "multiclass":
            counts = np.bincount(self.targets, minlength=len(self.classes))
            per_class: dict = {c: int(n) for c, n in zip(self.classes, counts, strict=True)}
        else:
            per_class = {
                c: {
                    "positive": int(np.sum(column == 1)),
                    "negative": int(np.sum(column == 0)),
                    "unknown": int(np.sum(np.isnan(column))),
                }
                for c, column in zip(self.classes, self.targets.T, strict=True)
            }
        summary = {
            "kind": self.kind,
            "items": len(self),
            "patients": len(set(self.patients.tolist())),
            "per_class": per_class,
        }
        if self.splits is not None:
            summary["splits"] = {s: int(np.sum(self.splits == s)) for s in SPLITS}
        return summary


# --- CSV helpers shared by the dataset readers -------------------------------------------------


def read_csv_header(csv_path: str | Path) -> list[str]:
    """The column names of a CSV (gzip-compressed when it ends in .gz), reading its first line only."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path}: no such file")
    opener = gzip.open if csv_path.suffix.lower() == ".gz" else open
    try:
        with opener(csv_path, "rt", newline="", encoding="utf-8-sig") as fh:
            return [name.strip() for name in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{csv_path}: not a readable CSV file ({exc})") from exc


def read_csv_rows(csv_path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and the (line number, row) pairs of a CSV (gzip-compressed when it ends in .gz).

    Cells and column names are stripped of spaces; a UTF-8 byte-order mark is dropped. The line
    number is the file's line where the row ends (the header is line 1), for error messages.
    """
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise ConfigError(f"{csv_path}: no such file")
    opener = gzip.open if csv_path.suffix.lower() == ".gz" else open
    try:
        with opener(csv_path, "rt", newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh)
            header = [name.strip() for name in next(reader, [])]
            rows = []
            for cells in reader:
                if not any(cell.strip() for cell in cells):
                    continue  # blank lines
                if len(cells) != len(header):
                    raise ConfigError(
                        f"{csv_path}, line {reader.line_num}: {len(cells)} cells, the header has "
                        f"{len(header)}"
                    )
                rows.append(
                    (reader.line_num, {h: c.strip() for h, c in zip(header, cells, strict=True)})
                )
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"{csv_path}: not a readable CSV file ({exc})") from exc
    if not header:
        raise ConfigError(f"{csv_path}: empty file")
    if len(set(header)) != len(header):
        doubled = [name for name, n in Counter(header).items() if n > 1]
        raise ConfigError(f"{csv_path}: columns named twice: {first_items(doubled)}")
    return header, rows


def require_columns(csv_path: str | Path, header: list[str], needed: Sequence[str]) -> None:
    """ConfigError naming the columns of `needed` that the CSV lacks, and those it has."""
    absent = [name for name in needed if name not in header]
    if absent:
        raise ConfigError(
            f"{csv_path}: no column {first_items([repr(a) for a in absent])}; "
            f"it has {first_items([repr(h) for h in header], limit=20)}"
        )


def bad_rows_error(csv_path: str | Path, what: str, bad: list[tuple[int, str]]) -> ConfigError:
    """'CSV: N rows WHAT: line L (value), ...' listing the first offenders."""
    listed = [f"line {line} ({text})" if text else f"line {line}" for line, text in bad]
    return ConfigError(f"{csv_path}: {len(bad)} row(s) {what}: {first_items(listed)}")


def normalise_splits(values: Sequence[str], where: str) -> np.ndarray:
    """Split names as "train"/"val"/"test" (also accepting valid, validation, validate, ...);
    ConfigError naming the values that are none of them."""
    lowered = [str(v).strip().lower() for v in values]
    unknown = sorted({v for v in lowered if v not in SPLIT_NAMES})
    if unknown:
        raise ConfigError(
            f"{where}: unknown split value(s) {first_items([repr(u) for u in unknown])}; "
            f"expected train, val (valid, validation) or test"
        )
    return np.asarray([SPLIT_NAMES[v] for v in lowered], dtype=str)


def _natural_sorted(values: set[str]) -> list[str]:
    """Numeric labels in numeric order ("2" before "10"), anything else alphabetically."""
    try:
        return sorted(values, key=float)
    except ValueError:
        return sorted(values)


# --- readers -----------------------------------------------------------------------------------


def read_label_csv(
    csv_path: str | Path,
    label_columns: Sequence[str] | None = None,
    *,
    kind: Literal["auto", "multiclass", "multilabel"] = "auto",
    classes: Sequence[str] | None = None,
    path_column: str = "path",
    patient_column: str | None = "patient",
    split_column: str | None = "split",
) -> LabelTable:
    """A LabelTable from a CSV with an image path column and one or more label columns.

    - `label_columns`: default every column other than the path, patient and split columns.
    - `kind="auto"`: one label column -> multiclass (its values are the class names, sorted --
      numerically when all are numbers -- unless `classes` gives them and their order), several ->
      multilabel (cells 1 or 0, blank = unknown -> NaN). `kind="multilabel"` with one column makes a
      one-class multilabel table (a binary sigmoid target).
    - Relative paths are relative to the CSV's folder; ids are the resolved paths.
    - `patient` and `split` columns are optional (absent: patient = the item id, splits None);
      split values train, val (also valid, validation, validate) or test.
    Raises ConfigError listing the first offending rows by line number: a label outside `classes`, a
    cell that is not 0/1/blank in a multilabel column, a blank path or patient, an unknown split, an
    image listed twice. Missing image files are found by `check_images_exist`.
    """
    csv_path = Path(csv_path)
    header, rows = read_csv_rows(csv_path)
    require_columns(csv_path, header, [path_column])
    special = {path_column, patient_column, split_column}
    if label_columns is None:
        label_columns = [h for h in header if h not in special]
        if not label_columns:
            raise ConfigError(f"{csv_path}: no label column besides {sorted(special - {None})}")
    label_columns = list(label_columns)
    require_columns(csv_path, header, label_columns)
    if not rows:
        raise ConfigError(f"{csv_path}: no rows")
    if kind == "auto":
        kind = "multiclass" if len(label_columns) == 1 else "multilabel"
    if kind == "multiclass":
        if len(label_columns) != 1:
            raise ConfigError(
                f"{csv_path}: multiclass labels come from one column, got {label_columns}"
            )
        targets, class_names = _multiclass_targets(csv_path, rows, label_columns[0], classes)
    elif kind == "multilabel":
        if classes is not None:
            raise ConfigError(
                f"{csv_path}: multilabel classes are the label columns; choose them with "
                f"label_columns, not classes"
            )
        targets, class_names = _multilabel_targets(csv_path, rows, label_columns), label_columns
    else:
        raise ConfigError(f"kind must be auto, multiclass or multilabel, got {kind!r}")

    blank_paths = [(line, "") for line, row in rows if not row[path_column]]
    if blank_paths:
        raise bad_rows_error(csv_path, f"with no {path_column!r}", blank_paths)
    paths = [_resolve(csv_path.parent, row[path_column]) for _, row in rows]
    _refuse_duplicates(csv_path, rows, paths)
    images = FileImages(paths, resolved=True)  # _resolve did it: one realpath per row, not two
    if patient_column is not None and patient_column in header:
        blank = [(line, "") for line, row in rows if not row[patient_column]]
        if blank:
            raise bad_rows_error(csv_path, f"with no {patient_column!r}", blank)
        patients = np.asarray([row[patient_column] for _, row in rows], dtype=str)
    else:
        patients = np.asarray([images.item_id(i) for i in range(len(images))], dtype=str)
    splits = None
    if split_column is not None and split_column in header:
        splits = _checked_split_cells(csv_path, rows, split_column)
    return LabelTable(images, targets, kind, tuple(class_names), patients, splits)


def _resolve(folder: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else folder / path).resolve()


def _refuse_duplicates(csv_path: Path, rows: list, paths: list[Path]) -> None:
    seen: dict[Path, int] = {}
    doubled = []
    for (line, _), path in zip(rows, paths, strict=True):
        if path in seen:
            doubled.append((line, f"{path.name}, first on line {seen[path]}"))
        else:
            seen[path] = line
    if doubled:
        raise bad_rows_error(csv_path, "list an image already listed", doubled)


def _checked_split_cells(csv_path: Path, rows: list, column: str) -> np.ndarray:
    bad = [
        (line, repr(row[column])) for line, row in rows if row[column].lower() not in SPLIT_NAMES
    ]
    if bad:
        raise bad_rows_error(
            csv_path, f"with a {column!r} other than train, val (valid, validation) or test", bad
        )
    return normalise_splits([row[column] for _, row in rows], str(csv_path))


def _multiclass_targets(
    csv_path: Path, rows: list, column: str, classes: Sequence[str] | None
) -> tuple[np.ndarray, list[str]]:
    values = [row[column] for _, row in rows]
    if classes is None:
        blank = [(line, "") for line, row in rows if not row[column]]
        if blank:
            raise bad_rows_error(csv_path, f"with no label in {column!r}", blank)
        names = _natural_sorted(set(values))
    else:
        names = [str(c).strip() for c in classes]
        if len(set(names)) != len(names) or not names:
            raise ConfigError(f"classes must be distinct names, got {list(classes)}")
        allowed = set(names)
        bad = [(line, repr(row[column])) for line, row in rows if row[column] not in allowed]
        if bad:
            raise bad_rows_error(
                csv_path, f"with a {column!r} outside the classes {first_items(names)}", bad
            )
    index = {name: i for i, name in enumerate(names)}
    return np.asarray([index[v] for v in values], dtype=np.int64), names


def _multilabel_targets(csv_path: Path, rows: list, columns: list[str]) -> np.ndarray:
    targets = np.full((len(rows), len(columns)), np.nan, dtype=np.float32)
    bad = []
    for r, (line, row) in enumerate(rows):
        for c, column in enumerate(columns):
            cell = row[column]
            if not cell:
                continue  # unknown
            try:
                value = float(cell)
            except ValueError:
                value = None
            if value not in (0.0, 1.0):
                bad.append((line, f"{column}={cell!r}"))
            else:
                targets[r, c] = value
    if bad:
        raise bad_rows_error(csv_path, "with a multilabel cell other than 1, 0 or blank", bad)
    return targets


def read_class_folders(root: str | Path) -> LabelTable:
    """A multiclass LabelTable from one sub-folder per class (class names = folder names, sorted).

    Images are found recursively (supported files only, hidden files and folders skipped); the
    patient of each item is its id (the folder layout names no patients). Files directly in `root`
    belong to no class: they are left out with a warning that names them.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ConfigError(f"{root}: no such folder")
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise ConfigError(f"{root}: no class folders (one sub-folder per class is expected)")
    loose = [p.name for p in sorted(root.iterdir()) if p.is_file() and is_supported(p)]
    if loose:
        log.warning(
            "%s: %d image(s) outside any class folder left out: %s",
            root,
            len(loose),
            first_items(loose),
        )
    paths: list[Path] = []
    targets: list[int] = []
    for index, folder in enumerate(folders):
        found = [
            p
            for p in sorted(folder.rglob("*"))
            if p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
            and is_supported(p)
        ]
        if not found:
            log.warning("%s: class folder %r holds no images", root, folder.name)
        paths.extend(found)
        targets.extend([index] * len(found))
    if not paths:
        raise ConfigError(f"{root}: no images in its class folders")
    images = FileImages(paths)
    patients = np.asarray([images.item_id(i) for i in range(len(images))], dtype=str)
    return LabelTable(
        images, np.asarray(targets), "multiclass", tuple(f.name for f in folders), patients
    )


def check_images_exist(table: LabelTable) -> None:
    """ConfigError naming how many images are missing and the first of them (run before training).

    Stores that can tell (a `missing()` method: files, HDF5 files) are checked; others pass.
    """
    missing_of = getattr(table.images, "missing", None)
    if missing_of is None:
        return
    missing = missing_of()
    if missing:
        raise ConfigError(
            f"{len(missing)} of {len(table)} images are missing: {first_items(missing, sep='; ')}"
        )
