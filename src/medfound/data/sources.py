"""Turn the user's INPUTS (files, folders, CSV lists) into a de-duplicated list of image sources."""

import csv
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from medfound.errors import ConfigError
from medfound.io.dicom import is_dicom, series_key
from medfound.io.readers import is_supported
from medfound.io.slide import slide_companions
from medfound.privacy import UidPolicy, uid_policy


@dataclass(frozen=True)
class ImageSource:
    """One image to read: a file, or the files of one DICOM series (read as a volume).

    `id` is what outputs and resume use: the file's resolved path, or `<folder>#series=<ID>` where ID
    is the SeriesInstanceUID as the UID policy shows it (a keyed hash unless kept; privacy.py).
    """

    id: str
    paths: tuple[Path, ...]
    series: bool = False  # the files of one DICOM series, read together as a volume

    @property
    def target(self) -> Path | tuple[Path, ...]:
        """What `read_image` takes: a path, or the list of a series' files."""
        return self.paths if self.series else self.paths[0]


def collect_sources(
    inputs: Iterable[str | Path], group_series: bool = False, uids: UidPolicy | None = None
) -> tuple[list[ImageSource], list[tuple[str, str]]]:
    """Expand inputs into image sources, in a stable order.

    Folders are searched recursively for supported files (hidden files skipped); a `.csv` input lists
    images in its `path` column (relative paths are relative to the CSV). Paths are resolved
    (absolute, symlinks followed), so the same file has the same id from any working folder. With
    `group_series`, DICOM files of a folder that share a SeriesInstanceUID become one volume source.
    Returns the sources and the (input, reason) pairs of inputs that do not exist or are not images.
    """
    files: list[Path] = []
    problems: list[tuple[str, str]] = []
    for item in inputs:
        path = Path(item).resolve()
        if path.is_dir():
            files.extend(
                p
                for p in sorted(path.rglob("*"))
                if p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and is_supported(p)
            )
        elif path.suffix.lower() == ".csv" and path.is_file():
            files.extend(_csv_paths(path))
        elif path.exists() or path.suffix:
            files.append(path)  # the reader reports it if missing or unreadable
        else:
            problems.append((str(path), "no such file or folder"))
    # the JPEG parts of a Hamamatsu .vms are read through it, not as images of their own
    parts = {part for path in files for part in slide_companions(path)}
    unique = [path for path in dict.fromkeys(files) if path not in parts]
    if not group_series:
        return [ImageSource(str(p), (p,)) for p in unique], problems
    return _group_dicom_series(unique, uids or uid_policy()), problems


def _csv_paths(csv_path: Path) -> list[Path]:
    with open(csv_path, newline="") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None or "path" not in reader.fieldnames:
            raise ConfigError(f"{csv_path}: needs a 'path' column, has {reader.fieldnames}")
        rows = [row["path"] for row in reader if row["path"]]
    return [(p if p.is_absolute() else csv_path.parent / p).resolve() for p in map(Path, rows)]


def _group_dicom_series(files: list[Path], uids: UidPolicy) -> list[ImageSource]:
    groups: dict[tuple[Path, str], list[Path]] = defaultdict(list)
    order: list[tuple[Path, str] | Path] = []
    for path in files:
        uid = series_key(path) if path.suffix.lower() in (".dcm", "") and is_dicom(path) else None
        if uid is None:
            order.append(path)
            continue
        key = (path.parent, uid)
        if key not in groups:
            order.append(key)
        groups[key].append(path)
    sources = []
    for entry in order:
        if isinstance(entry, Path):
            sources.append(ImageSource(str(entry), (entry,)))
        elif len(groups[entry]) == 1:
            sources.append(ImageSource(str(groups[entry][0]), tuple(groups[entry])))
        else:
            folder, uid = entry
            sources.append(
                ImageSource(f"{folder}#series={uids(uid)}", tuple(groups[entry]), series=True)
            )
    return sources


def may_be_volume(source) -> bool:
    """An ImageSource that can hold a volume: a series, or a file that may."""
    return source.series or path_may_be_volume(str(source.paths[0]))


def path_may_be_volume(item_id: str) -> bool:
    """An item id (a path, or `file.h5#17` for a row of an array file: PCam's 2D patches) that can
    name a volume: anything but a plain raster image file and a row."""
    from medfound.io.raster import RASTER_SUFFIXES

    return "#" not in item_id and Path(item_id).suffix.lower() not in RASTER_SUFFIXES


GROUP_COLUMNS = ("patient", "study")


def patient_groups(inputs: Iterable[str | Path], sources: list[ImageSource]) -> list[list[int]]:
    """The indices of `sources` grouped by the `patient` column (else `study`) of the CSV lists
    among `inputs`, in order of first appearance; a source no CSV assigns is a group of its own.
    ConfigError when no CSV input has either column."""
    owner: dict[str, str] = {}
    csvs = [Path(item) for item in inputs if Path(item).suffix.lower() == ".csv"]
    for csv_path in csvs:
        with open(csv_path, newline="") as fh:
            reader = csv.DictReader(fh)
            column = next((c for c in GROUP_COLUMNS if c in (reader.fieldnames or [])), None)
            if column is None:
                raise ConfigError(
                    f"{csv_path}: MICLe needs a 'patient' or 'study' column (which images belong "
                    f"together); the CSV has {reader.fieldnames}"
                )
            for row in reader:
                if row.get("path") and row[column]:
                    path = Path(row["path"])
                    path = (path if path.is_absolute() else csv_path.parent / path).resolve()
                    owner[str(path)] = f"{csv_path}\0{row[column]}"
    if not csvs:
        raise ConfigError(
            "MICLe needs the data as a CSV with a 'patient' or 'study' column (which images belong "
            "together)"
        )
    groups: dict[str, list[int]] = {}
    for i, source in enumerate(sources):
        groups.setdefault(owner.get(source.id, f"\0{i}"), []).append(i)
    return list(groups.values())
