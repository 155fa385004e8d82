"""`medfound probe EMB.parquet --labels LABELS.csv --out RUN_DIR`: linear probe and k-NN on frozen
embeddings.

The embeddings (the Parquet of `medfound embed`: `path`, `embedding`) are joined with the label CSV
(`medfound.data.labels.read_label_csv`) on the resolved image path. Label rows without an embedding
and embeddings without a label row are counted, listed in a warning and in metrics.json, and left out.
Splits come from the CSV's `split` column when it has one, else by patient (seeded); they are assigned
over all the label rows, so they do not change when some embeddings are missing, and written to
RUN_DIR/splits.csv for the items used.

The probes are fitted on train and val together (the logistic regression chooses its C by
cross-validation within those items, grouped by patient, so it needs no separate validation split)
and evaluated on test, with patient-level bootstrap intervals for every figure.

RUN_DIR gets: metrics.json (figures with intervals, chosen C, counts per split, the unmatched rows),
config.json (the resolved options), splits.csv, predictions.csv (every used item's scores, with its
split: only the test rows are held-out predictions), roc.png (the logistic probe's curves, or
k-NN's when only it runs) and roc_knn.png when both run.
"""

import csv
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from medfound import __version__
from medfound.data.labels import LabelTable, read_label_csv
from medfound.data.splits import assign_splits, write_splits
from medfound.errors import ConfigError, first_items
from medfound.evaluation.classification import headline_metric
from medfound.evaluation.plots import save_roc_curves
from medfound.evaluation.probe import DEFAULT_FOLDS, DEFAULT_K, Probe, fit_knn, fit_logistic
from medfound.files import atomic_write
from medfound.tasks.classification_report import classification_figures

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
SPLITS_FILE = "splits.csv"
PREDICTIONS_FILE = "predictions.csv"
CLASSIFIERS = ("logistic", "knn")
_LISTED = 20  # unmatched rows listed by name in metrics.json (all are counted)


@dataclass
class ProbeOptions:
    """Options of a probe run (the CLI flags of `medfound probe`)."""

    label_columns: list[str] | None = None  # None: every CSV column but path, patient, split
    kind: Literal["auto", "multiclass", "multilabel"] = "auto"
    classifier: Literal["logistic", "knn", "both"] = "both"
    seed: int = 0  # splits, cross-validation folds, bootstrap
    n_bootstrap: int = 1000  # 95% intervals
    k: int = DEFAULT_K
    folds: int = DEFAULT_FOLDS
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15)  # when the CSV has no split column

    def validate(self) -> None:
        """Refuse impossible values with the option's name."""
        if self.classifier not in (*CLASSIFIERS, "both"):
            raise ConfigError(
                f"--classifier must be logistic, knn or both, got {self.classifier!r}"
            )
        if self.kind not in ("auto", "multiclass", "multilabel"):
            raise ConfigError(f"kind must be auto, multiclass or multilabel, got {self.kind!r}")
        if self.n_bootstrap < 0:
            raise ConfigError(f"--bootstrap must be >= 0, got {self.n_bootstrap}")
        if self.k < 1:
            raise ConfigError(f"--k must be >= 1, got {self.k}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be >= 2, got {self.folds}")

    @property
    def classifiers(self) -> tuple[str, ...]:
        return CLASSIFIERS if self.classifier == "both" else (self.classifier,)


@dataclass
class ProbeResult:
    """What a probe run wrote and found; `metrics` is the content of metrics.json."""

    out: Path
    metrics: dict
    files: dict[str, Path]
    labels_without_embedding: list[str] = field(default_factory=list)
    embeddings_without_label: list[str] = field(default_factory=list)
    invalid_embeddings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def classifier_metrics(self, name: str) -> dict:
        """The figures (with intervals) of one classifier: a `classification_metrics` layout."""
        return self.metrics["classifiers"][name]["metrics"]


def run_probe(
    embeddings: str | Path,
    labels_csv: str | Path,
    out: str | Path,
    options: ProbeOptions | None = None,
) -> ProbeResult:
    """Fit the probes on the train (+ val) items and report them on the test items (see the
    module docstring); ConfigError for unusable inputs, before anything is written."""
    started = time.perf_counter()
    options = options or ProbeOptions()
    options.validate()
    embeddings, labels_csv, out = Path(embeddings), Path(labels_csv), Path(out)
    _check_out(out)
    ids, vectors, invalid = read_embeddings(embeddings)
    table = read_label_csv(labels_csv, options.label_columns, kind=options.kind)
    splits = assign_splits(table.patients, options.fractions, options.seed, given=table.splits)

    label_ids = table.ids
    row_of = {item: i for i, item in enumerate(ids)}
    used = np.asarray([r for r, item in enumerate(label_ids) if item in row_of], dtype=np.int64)
    labelled = set(label_ids)
    # Embeddings left out for NaN values are counted in `invalid` only.
    left_out = set(invalid)
    no_embedding = [item for item in label_ids if item not in row_of and item not in left_out]
    no_label = [item for item in ids if item not in labelled]
    _warn_unmatched(no_embedding, no_label, invalid, embeddings, labels_csv)
    if not len(used):
        raise ConfigError(
            f"no label row of {labels_csv} has an embedding in {embeddings} (joined on the "
            f"resolved image path): labels name {first_items(label_ids, 3, '; ')}; embeddings "
            f"name {first_items(ids, 3, '; ') or 'nothing'}"
        )
    items = table.subset(used)
    X = vectors[[row_of[label_ids[r]] for r in used]]
    item_splits = splits[used]
    fit, test = np.isin(item_splits, ("train", "val")), item_splits == "test"
    _check_split_sizes(fit, test, item_splits)

    out.mkdir(parents=True, exist_ok=True)
    files = {"splits": out / SPLITS_FILE}
    write_splits(files["splits"], items.ids, items.patients.tolist(), item_splits.tolist())
    results, scores = {}, {}
    for name in options.classifiers:
        probe = _fit(name, X[fit], items, fit, options)
        scores[name] = probe.predict_scores(X)
        results[name] = _evaluate(
            probe, scores[name][test], items.subset(np.flatnonzero(test)), options
        )
    files |= _write_figures(out, items, test, scores)
    files["predictions"] = out / PREDICTIONS_FILE
    _write_predictions(files["predictions"], items, item_splits, scores)

    metrics = {
        "medfound_version": __version__,
        "embeddings": str(embeddings.resolve()),
        "labels": str(labels_csv.resolve()),
        "kind": items.kind,
        "classes": list(items.classes),
        "headline": headline_metric(items.kind),
        "fit_on": ["train", "val"],
        "evaluated_on": "test",
        "counts": _counts(table, items, item_splits, ids),
        "unmatched": {
            "labels_without_embedding": _listed(no_embedding),
            "embeddings_without_label": _listed(no_label),
            "invalid_embeddings": _listed(invalid),
        },
        "bootstrap": {
            "unit": "patient",
            "n_resamples": options.n_bootstrap,
            "level": 0.95,
            "seed": options.seed,
        },
        "classifiers": results,
    }
    files["metrics"] = out / METRICS_FILE
    _write_json(files["metrics"], metrics)
    files["config"] = out / CONFIG_FILE
    config = {"embeddings": metrics["embeddings"], "labels": metrics["labels"], **asdict(options)}
    _write_json(files["config"], config)
    return ProbeResult(
        out, metrics, files, no_embedding, no_label, invalid, time.perf_counter() - started
    )


def read_embeddings(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """(ids, float32 (N, D) vectors, ids left out for non-finite values) of an embedding Parquet.

    ConfigError when the file is not one (no `path`/`embedding` columns, feature maps of
    `--pool none`, vectors of different lengths, an id twice)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    try:
        schema = pq.read_schema(path)
    except (pa.ArrowException, OSError) as exc:
        raise ConfigError(f"{path}: not a readable Parquet file ({exc})") from exc
    absent = [c for c in ("path", "embedding") if c not in schema.names]
    if absent:
        raise ConfigError(
            f"{path}: no column {first_items(absent)} (columns: {first_items(schema.names)}); "
            "expected the output of `medfound embed`"
        )
    if "shape" in schema.names:
        raise ConfigError(
            f"{path} holds feature maps (`medfound embed --pool none`); a probe needs vectors: "
            "embed with --pool avg"
        )
    table = pq.read_table(path, columns=["path", "embedding"])
    ids = [str(p) for p in table.column("path").to_pylist()]
    column = table.column("embedding").combine_chunks()
    if column.null_count:
        raise ConfigError(f"{path}: {column.null_count} row(s) without an embedding")
    lengths = column.value_lengths().to_numpy()
    if len(ids) and (lengths != lengths[0]).any():
        odd = [f"{ids[i]} ({lengths[i]})" for i in np.flatnonzero(lengths != lengths[0])]
        raise ConfigError(
            f"{path}: embeddings of different lengths (the first has {lengths[0]}): "
            f"{first_items(odd, sep='; ')}"
        )
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        doubled = [i for i in ids if i in seen or seen.add(i)]
        raise ConfigError(f"{path}: paths listed twice: {first_items(doubled, sep='; ')}")
    width = int(lengths[0]) if len(ids) else 0
    vectors = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    vectors = vectors.reshape(len(ids), width)
    finite = np.isfinite(vectors).all(axis=1)
    invalid = [ids[i] for i in np.flatnonzero(~finite)]
    return [i for i, ok in zip(ids, finite, strict=True) if ok], vectors[finite], invalid


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    entries = sorted(p.name for p in out.iterdir()) if out.exists() else []
    if entries:
        raise ConfigError(
            f"{out} is not empty ({first_items(entries, 4)}); a probe run needs an empty or new "
            "folder: choose another --out"
        )


def _warn_unmatched(no_embedding, no_label, invalid, embeddings, labels_csv) -> None:
    if no_embedding:
        log.warning(
            "%d label row(s) of %s have no embedding in %s, left out: %s",
            len(no_embedding), labels_csv, embeddings, first_items(no_embedding, sep="; "),
        )  # fmt: skip
    if no_label:
        log.warning(
            "%d embedding(s) of %s have no label row in %s, left out: %s",
            len(no_label), embeddings, labels_csv, first_items(no_label, sep="; "),
        )  # fmt: skip
    if invalid:
        log.warning(
            "%d embedding(s) of %s hold NaN or infinite values, left out: %s",
            len(invalid), embeddings, first_items(invalid, sep="; "),
        )  # fmt: skip


def _check_split_sizes(fit: np.ndarray, test: np.ndarray, splits: np.ndarray) -> None:
    counts = ", ".join(f"{s} {int(np.sum(splits == s))}" for s in ("train", "val", "test"))
    if not test.any():
        raise ConfigError(
            f"no test items among those with embeddings ({counts}): a probe is reported on the "
            "test split (give more patients, or a split column with test rows)"
        )
    if fit.sum() < 2:
        raise ConfigError(f"too few training items among those with embeddings ({counts})")


def _fit(name: str, X: np.ndarray, items: LabelTable, fit: np.ndarray, options) -> Probe:
    targets, n_classes = items.targets[fit], len(items.classes)
    if name == "logistic":
        return fit_logistic(
            X, targets, items.kind, groups=items.patients[fit], seed=options.seed,
            n_classes=n_classes, folds=options.folds,
        )  # fmt: skip
    return fit_knn(X, targets, items.kind, options.k, n_classes=n_classes)


def _evaluate(probe: Probe, scores: np.ndarray, test: LabelTable, options) -> dict:
    """The probe's figures on the test items, each with its patient-level interval (laid out as
    every classification result is: tasks/classification_report.py), its C or k, and its notes."""
    classes = test.classes
    metrics = classification_figures(
        test.targets, scores, test.patients, test.kind, classes,
        n_resamples=options.n_bootstrap, seed=options.seed,
    )  # fmt: skip
    result = {"metrics": metrics, "notes": probe.described_notes(classes)}
    if probe.method == "logistic":
        result["chosen_C"] = {classes[k]: c for k, c in sorted(probe.chosen_c.items())}
        result["cv_folds"] = options.folds
    else:
        result["k"] = {classes[k]: n for k, n in sorted(probe.neighbours.items())}
    return result


def _counts(table: LabelTable, items: LabelTable, splits: np.ndarray, ids: list[str]) -> dict:
    per_split = {}
    for name in ("train", "val", "test"):
        rows = np.flatnonzero(splits == name)
        part = items.subset(rows).describe() if len(rows) else {"items": 0, "patients": 0}
        part.pop("kind", None)
        per_split[name] = part
    return {
        "label_rows": len(table),
        "embeddings": len(ids),
        "used": len(items),
        "patients": len(set(items.patients.tolist())),
        "per_split": per_split,
    }


def _listed(values: list[str]) -> dict:
    return {"count": len(values), "first": values[:_LISTED]}


def _write_figures(out: Path, items: LabelTable, test: np.ndarray, scores: dict) -> dict:
    files = {}
    for i, name in enumerate(scores):
        path = out / ("roc.png" if i == 0 else f"roc_{name}.png")
        title = f"{name} probe, test split ({int(test.sum())} items)"
        save_roc_curves(
            path, items.targets[test], scores[name][test], items.kind, items.classes, title
        )
        files["roc" if i == 0 else f"roc_{name}"] = path
    return files


def _write_predictions(path: Path, items: LabelTable, splits: np.ndarray, scores: dict) -> None:
    header = ["id", "patient", "split"]
    header += [f"{name}:{c}" for name in scores for c in items.classes]
    columns = np.concatenate([scores[name] for name in scores], axis=1)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            for item, patient, split, row in zip(
                items.ids, items.patients.tolist(), splits.tolist(), columns, strict=True
            ):
                writer.writerow([item, patient, split, *(f"{v:.6g}" for v in row)])

    atomic_write(path, write)


def _write_json(path: Path, content: dict) -> None:
    # allow_nan=False: every undefined figure is None (null), never NaN
    text = json.dumps(content, indent=2, allow_nan=False) + "\n"
    atomic_write(path, lambda tmp: tmp.write_text(text))
