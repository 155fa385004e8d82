"""Probes of an encoder while it pretrains (SimCLR TF2's `lineareval_while_pretraining`): a small
labelled set is embedded, its patients split in halves, and a k-NN and a logistic-regression probe
(evaluation/probe.py) fitted on one half are scored on the other.
"""

from dataclasses import dataclass

import numpy as np

from medfound.data.splits import assign_splits
from medfound.errors import ConfigError
from medfound.evaluation.classification import Kind, class_columns, classification_metrics
from medfound.evaluation.probe import fit_knn, fit_logistic

# A shorter search than the transfer probe's: this runs at every evaluation.
PROBE_CS = (1e-3, 1e-2, 1e-1, 1.0)
PROBE_FOLDS = 3


@dataclass(frozen=True)
class ProbeTask:
    """The labelled set's kind and classes, and the seed of its patient split."""

    kind: Kind
    classes: tuple[str, ...]
    seed: int = 0

    def halves(self, patients: np.ndarray) -> np.ndarray:
        """(N,) "train" or "test" per item: whole patients to one half."""
        return assign_splits(np.asarray(patients), (0.5, 0.0, 0.5), seed=self.seed)

    def check(self, targets: np.ndarray, patients: np.ndarray, where: str) -> None:
        """ConfigError unless both halves can score some class (a positive and a negative)."""
        halves = self.halves(patients)
        for half in ("train", "test"):
            rows = halves == half
            defined = any(
                0 < int(y.sum()) < len(y)
                for _, y in class_columns(targets[rows], self.kind, len(self.classes))
            )
            if not defined:
                raise ConfigError(
                    f"{where}: the {half} half of its {len(set(patients.tolist()))} patients has "
                    "no class with both positive and negative items; the probe needs more "
                    "labelled patients"
                )


def probe_figures(
    embeddings: np.ndarray, targets: np.ndarray, patients: np.ndarray, task: ProbeTask
) -> dict:
    """{knn_auc, linear_auc} (macro ROC AUC on the test half), plus {knn_accuracy,
    linear_accuracy} for multiclass; a figure that is not defined is None."""
    halves = task.halves(patients)
    train, test = halves == "train", halves == "test"
    n_classes = len(task.classes)
    knn = fit_knn(embeddings[train], targets[train], task.kind, n_classes=n_classes)
    linear = fit_logistic(
        embeddings[train],
        targets[train],
        task.kind,
        groups=np.asarray(patients)[train],
        seed=task.seed,
        n_classes=n_classes,
        Cs=PROBE_CS,
        folds=PROBE_FOLDS,
    )
    figures = {}
    for name, probe in (("knn", knn), ("linear", linear)):
        metrics = classification_metrics(
            targets[test], probe.predict_scores(embeddings[test]), task.kind, task.classes
        )
        figures[f"{name}_auc"] = metrics["macro_auc"]
        if task.kind == "multiclass":
            figures[f"{name}_accuracy"] = metrics["accuracy"]
    return figures
