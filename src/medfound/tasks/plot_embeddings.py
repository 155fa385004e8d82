"""`medfound plot-embeddings EMB.parquet --color-by COLUMN`: a 2D map of embeddings as a PNG, with
the coordinates as a CSV beside it.

The embeddings are the Parquet of `medfound embed` (read by `medfound.tasks.probe.read_embeddings`,
which refuses files that are not one; rows with NaN or infinite values are left out and counted).
`color_by` names a column of that Parquet (modality, preset, model ...) or, with `labels`, a column of
a label CSV (a `path` column and any others), joined on the resolved image path as `medfound probe`
joins: relative paths are relative to the CSV's folder. Embeddings without a label row and label rows
without an embedding are counted, warned about and left out. Blank values are drawn as "(missing)".

More than `max_points` items are subsampled (seeded) before projecting; the title and the result
say so. The CSV (path, value, x, y) holds the plotted points, so users can re-plot them.
"""

import csv
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medfound.data.labels import bad_rows_error, read_csv_rows, require_columns
from medfound.errors import ConfigError, first_items
from medfound.evaluation.embedding_map import (
    METHOD_NAMES,
    METHODS,
    MIN_POINTS,
    draw_map,
    project,
)
from medfound.files import atomic_write
from medfound.tasks.probe import read_embeddings

log = logging.getLogger(__name__)

DEFAULT_MAX_POINTS = 20_000  # t-SNE and UMAP of more take minutes on a CPU; PCA would not mind
# Columns of an embedding Parquet that are not one value per item.
_NOT_COLOURS = ("embedding", "shape")


@dataclass
class MapResult:
    """What `plot_embeddings` drew and wrote."""

    image: Path  # the PNG
    coordinates_csv: Path  # path, value, x, y of every plotted point
    method: str
    color_by: str
    ids: list[str]  # the plotted items (resolved image paths), in the CSV's order
    values: list[str | None]  # their values (None: missing)
    coordinates: np.ndarray  # float64 (n_points, 2)
    n_points: int  # points in the scatter (read back from the figure)
    legend: list[str]  # legend entries (one per distinct value; none with a colour bar)
    colorbar: bool
    n_available: int  # items that could be plotted before subsampling
    subsampled: bool
    embeddings_without_label: list[str] = field(default_factory=list)
    labels_without_embedding: list[str] = field(default_factory=list)
    invalid_embeddings: list[str] = field(default_factory=list)
    seconds: float = 0.0


def plot_embeddings(
    embeddings: str | Path,
    out: str | Path,
    *,
    color_by: str,
    method: str = "pca",
    labels: str | Path | None = None,
    seed: int = 0,
    max_points: int = DEFAULT_MAX_POINTS,
    umap_epochs: int | None = None,
) -> MapResult:
    """Project the embeddings to 2D (standardised features; PCA, UMAP or t-SNE, seeded) and write
    OUT (a PNG, one point per item coloured by `color_by`) and OUT with the suffix .csv (path,
    value, x, y). ConfigError for unusable inputs, before anything is written."""
    started = time.perf_counter()
    embeddings, out = Path(embeddings), Path(out)
    _check_options(out, method, max_points)
    ids, vectors, invalid = read_embeddings(embeddings)
    if invalid:
        log.warning(
            "%d embedding(s) of %s hold NaN or infinite values, left out: %s",
            len(invalid), embeddings, first_items(invalid, sep="; "),
        )  # fmt: skip
    no_label: list[str] = []
    no_embedding: list[str] = []
    if labels is None:
        values = _parquet_values(embeddings, color_by, ids)
    else:
        by_id, no_embedding = _label_values(Path(labels), color_by, ids)
        no_label = [item for item in ids if item not in by_id]
        _warn_unmatched(no_label, no_embedding, embeddings, Path(labels))
        keep = [i for i, item in enumerate(ids) if item in by_id]
        ids, vectors = [ids[i] for i in keep], vectors[keep]
        values = [by_id[item] for item in ids]
    n_available = len(ids)
    if n_available < MIN_POINTS:
        raise ConfigError(
            f"{embeddings}: {n_available} item(s) to plot"
            + (f" with a row in {labels}" if labels is not None else "")
            + f"; a map needs at least {MIN_POINTS}"
        )
    chosen = np.arange(n_available)
    if n_available > max_points:
        chosen = np.sort(np.random.default_rng(seed).choice(n_available, max_points, replace=False))
        log.info(
            "%d items: a random sample of %d (seed %d) is plotted (--max-points)",
            n_available, max_points, seed,
        )  # fmt: skip
    ids, values = [ids[i] for i in chosen], [values[i] for i in chosen]
    projection = project(vectors[chosen], method, seed, umap_epochs=umap_epochs)
    title = f"{METHOD_NAMES[method]} of {len(ids)} embeddings, coloured by {color_by}"
    if len(ids) < n_available:
        title += f"\n(a random sample of {len(ids)} of {n_available} items, seed {seed})"
    drawing = draw_map(
        out, projection.coordinates, values, column=color_by, title=title,
        axis_labels=projection.axis_labels,
    )  # fmt: skip
    table = out.with_suffix(".csv")
    _write_coordinates(table, ids, values, projection.coordinates)
    return MapResult(
        image=drawing.path,
        coordinates_csv=table,
        method=method,
        color_by=color_by,
        ids=ids,
        values=values,
        coordinates=projection.coordinates,
        n_points=drawing.n_points,
        legend=drawing.legend,
        colorbar=drawing.colorbar,
        n_available=n_available,
        subsampled=len(ids) < n_available,
        embeddings_without_label=no_label,
        labels_without_embedding=no_embedding,
        invalid_embeddings=invalid,
        seconds=time.perf_counter() - started,
    )


def _check_options(out: Path, method: str, max_points: int) -> None:
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    if max_points < MIN_POINTS:
        raise ConfigError(f"--max-points must be >= {MIN_POINTS}, got {max_points}")
    if out.suffix.lower() != ".png":
        raise ConfigError(f"--out {out}: the map is a PNG; give a file name ending in .png")
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a file name ending in .png")


def _parquet_values(path: Path, column: str, ids: list[str]) -> list[str | None]:
    """The values of `column` for the items `ids` (as text; None where blank or null)."""
    import pyarrow.parquet as pq

    names = pq.read_schema(path).names
    usable = [n for n in names if n not in _NOT_COLOURS]
    if column not in usable:
        raise ConfigError(
            f"{path}: no column {column!r} to colour by; it has "
            f"{first_items([repr(n) for n in usable], limit=20)} (give --labels CSV to colour by a "
            "column of a label file)"
        )
    table = pq.read_table(path, columns=["path", column])
    by_id = {
        str(item): _text(value)
        for item, value in zip(
            table.column("path").to_pylist(), table.column(column).to_pylist(), strict=True
        )
    }  # read_embeddings refused paths listed twice
    return [by_id[item] for item in ids]


def _label_values(
    csv_path: Path, column: str, ids: list[str]
) -> tuple[dict[str, str | None], list[str]]:
    """{resolved path: value of `column`} of the label CSV's rows that have an embedding, and the
    resolved paths of its rows that have none."""
    header, rows = read_csv_rows(csv_path)
    require_columns(csv_path, header, ["path"])
    if column == "path" or column not in header:
        choices = [repr(h) for h in header if h != "path"]
        raise ConfigError(
            f"{csv_path}: no column {column!r} to colour by; it has "
            f"{first_items(choices, limit=20) or 'only a path column'}"
        )
    blank = [(line, "") for line, row in rows if not row["path"]]
    if blank:
        raise bad_rows_error(csv_path, "with no 'path'", blank)
    wanted = set(ids)
    found: dict[str, str | None] = {}
    first_line: dict[str, int] = {}
    doubled: list[tuple[int, str]] = []
    no_embedding = []
    for line, row in rows:
        # Resolved as medfound.data.labels.read_label_csv resolves (and `embed` writes) paths.
        item = str(_resolve(csv_path.parent, row["path"]))
        if item in first_line:
            doubled.append((line, f"{Path(item).name}, first on line {first_line[item]}"))
            continue
        first_line[item] = line
        if item in wanted:
            found[item] = _text(row[column])
        else:
            no_embedding.append(item)
    if doubled:
        raise bad_rows_error(csv_path, "list an image already listed", doubled)
    return found, no_embedding


def _resolve(folder: Path, text: str) -> Path:
    path = Path(text).expanduser()
    return (path if path.is_absolute() else folder / path).resolve()


def _text(value) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _warn_unmatched(no_label: list[str], no_embedding: list[str], embeddings, labels) -> None:
    if no_label:
        log.warning(
            "%d embedding(s) of %s have no row in %s, left out: %s",
            len(no_label), embeddings, labels, first_items(no_label, sep="; "),
        )  # fmt: skip
    if no_embedding:
        log.warning(
            "%d row(s) of %s have no embedding in %s, left out: %s",
            len(no_embedding), labels, embeddings, first_items(no_embedding, sep="; "),
        )  # fmt: skip


def _write_coordinates(
    path: Path, ids: list[str], values: list[str | None], coordinates: np.ndarray
) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["path", "value", "x", "y"])
            for item, value, (x, y) in zip(ids, values, coordinates.tolist(), strict=True):
                writer.writerow([item, "" if value is None else value, repr(x), repr(y)])

    atomic_write(path, write)
