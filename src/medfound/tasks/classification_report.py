"""What every classification result is written as (fine-tuning and probes alike): metrics with
patient-level bootstrap intervals in metrics.json, ROC curves in roc.png, and one row of class
probabilities per item in predictions.csv."""

import csv
import json
from pathlib import Path

import numpy as np

from medfound.evaluation.bootstrap import bootstrap_figures
from medfound.evaluation.classification import ResampledFigures, classification_metrics
from medfound.files import atomic_write

METRICS_FILE = "metrics.json"
ROC_FILE = "roc.png"
PREDICTIONS_FILE = "predictions.csv"


def classification_figures(
    targets: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    kind: str,
    classes: tuple[str, ...],
    *,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict:
    """Every figure (macro and per-class AUC and AP; accuracy and balanced accuracy for
    multiclass) as a dict of its value and patient-level bootstrap interval, laid out as
    `classification_metrics` lays out its numbers (what evaluation/tables.py prints)."""
    metrics = classification_metrics(targets, scores, kind, classes)
    figures = bootstrap_figures(
        ResampledFigures(targets, scores, kind, classes), patients, n_resamples, seed
    )
    per_class = {
        name: {
            "auc": figures[f"per_class/{name}/auc"].to_dict(),
            "ap": figures[f"per_class/{name}/ap"].to_dict(),
            "n_pos": counts["n_pos"],
            "n_neg": counts["n_neg"],
        }
        for name, counts in metrics["per_class"].items()
    }
    overall = {k: f.to_dict() for k, f in figures.items() if not k.startswith("per_class/")}
    return {
        "kind": kind,
        "classes": list(classes),
        "items": len(targets),
        "patients": len(set(np.asarray(patients).tolist())),
        "per_class": per_class,
        **overall,
    }


def evaluate_predictions(
    out_dir: Path,
    *,
    ids: list[str],
    targets: np.ndarray,
    scores: np.ndarray,
    patients: np.ndarray,
    kind: str,
    classes: tuple[str, ...],
    n_resamples: int = 1000,
    seed: int = 0,
    extra: dict | None = None,
    prefix: str = "",
) -> dict:
    """Write OUT/[prefix]metrics.json, roc.png and predictions.csv for these predictions; returns
    the metrics written. `extra` (counts, settings) is stored beside the figures."""
    from medfound.evaluation.plots import save_roc_curves

    out_dir = Path(out_dir)
    report = classification_figures(
        targets, scores, patients, kind, classes, n_resamples=n_resamples, seed=seed
    )
    report |= extra or {}
    text = json.dumps(report, indent=2, sort_keys=True, allow_nan=False)
    atomic_write(out_dir / f"{prefix}{METRICS_FILE}", lambda tmp: tmp.write_text(text))
    if len(targets):
        save_roc_curves(out_dir / f"{prefix}{ROC_FILE}", targets, scores, kind, classes)
    write_predictions(out_dir / f"{prefix}{PREDICTIONS_FILE}", ids, scores, classes)
    return report


def write_predictions(path: Path, ids: list[str], scores: np.ndarray, classes) -> None:
    """CSV `id,<class 1>,<class 2>,...` of probabilities, one row per item (atomically)."""

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *classes])
            for item, row in zip(ids, scores, strict=True):
                writer.writerow([item, *(f"{v:.6g}" for v in row)])

    atomic_write(path, write)
