"""Classification metrics: per-class and macro ROC AUC and average precision, accuracy, balanced
accuracy (scikit-learn), with undefined figures reported as None instead of NaN.

Targets follow `medfound.data.labels.LabelTable`: multiclass int (N,) in [0, K); multilabel float (N, K)
of 1/0 with NaN for unknown (masked out per class). Scores are (N, K) probabilities. A class whose
evaluated items hold one label value only (no positives or no negatives) has no AUC or AP: it is
reported as None and left out of the macro means, which are None when no class is defined.

`ResampledFigures` computes the same figures for a resample given as item indices (the patient-level
bootstrap) in O(N) per class, from score orders sorted once.
"""

from collections.abc import Sequence
from typing import Literal

import numpy as np

from medfound.errors import ConfigError

Kind = Literal["multiclass", "multilabel"]
KINDS = ("multiclass", "multilabel")


def headline_metric(kind: Kind) -> str:
    """The key of the figure a run is judged by (early stopping, summaries): macro ROC AUC."""
    check_kind(kind)
    return "macro_auc"


def check_kind(kind: str) -> None:
    """Refuse a kind other than multiclass or multilabel."""
    if kind not in KINDS:
        raise ConfigError(f"kind must be multiclass or multilabel, got {kind!r}")


def check_inputs(
    targets: np.ndarray, scores: np.ndarray, kind: Kind, classes: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Targets and scores as arrays of the shapes `kind` and `classes` ask for (ValueError if not)."""
    check_kind(kind)
    targets, scores = np.asarray(targets), np.asarray(scores, dtype=np.float64)
    n_classes = len(classes)
    if scores.ndim != 2 or scores.shape[1] != n_classes:
        raise ValueError(f"scores must be (N, {n_classes}), got {scores.shape}")
    expected = (len(scores),) if kind == "multiclass" else (len(scores), n_classes)
    if targets.shape != expected:
        raise ValueError(f"{kind} targets must be {expected}, got {targets.shape}")
    # A diverged model's NaN would otherwise end in scikit-learn's error, or in wrong ranks here.
    bad_rows = np.flatnonzero(~np.isfinite(scores).all(axis=1))
    if len(bad_rows):
        raise ValueError(
            f"scores of {len(bad_rows)} of {len(scores)} items are NaN or infinite "
            f"(first rows {bad_rows[:5].tolist()})"
        )
    if kind == "multiclass":
        values = targets.astype(np.float64)
        if targets.size and not (np.isfinite(values).all() and (values == np.round(values)).all()):
            raise ValueError("multiclass targets must be class indices (whole numbers)")
        if targets.size and (targets.min() < 0 or targets.max() >= n_classes):
            raise ValueError(f"multiclass targets must lie in [0, {n_classes})")
        targets = targets.astype(np.int64)
    else:
        targets = targets.astype(np.float64)
        if not np.isin(targets[~np.isnan(targets)], (0.0, 1.0)).all():
            raise ValueError("multilabel targets must be 1, 0 or NaN (unknown)")
    return targets, scores


def class_columns(targets: np.ndarray, kind: Kind, n_classes: int):
    """For each class: (mask of evaluated items, 0/1 labels of those items). Multiclass is
    one-vs-rest; multilabel leaves out the items whose label is NaN."""
    for k in range(n_classes):
        if kind == "multiclass":
            yield np.ones(len(targets), bool), (targets == k).astype(np.int64)
        else:
            known = ~np.isnan(targets[:, k])
            yield known, targets[known, k].astype(np.int64)


def classification_metrics(
    targets: np.ndarray, scores: np.ndarray, kind: Kind, classes: Sequence[str]
) -> dict:
    """Per-class and macro AUC and AP; accuracy and balanced accuracy for multiclass.

    Returns {"per_class": {class: {"auc", "ap", "n_pos", "n_neg"}}, "macro_auc", "macro_ap"} plus
    "accuracy" and "balanced_accuracy" (of the arg-max class) for multiclass. Figures that are not
    defined (a class with one label value among the evaluated items, or no items) are None.
    """
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        balanced_accuracy_score,
        roc_auc_score,
    )

    targets, scores = check_inputs(targets, scores, kind, classes)
    per_class = {}
    for k, (known, y) in enumerate(class_columns(targets, kind, len(classes))):
        n_pos = int(y.sum())
        n_neg = len(y) - n_pos
        auc = ap = None
        if n_pos and n_neg:
            s = scores[known, k]
            auc, ap = float(roc_auc_score(y, s)), float(average_precision_score(y, s))
        per_class[classes[k]] = {"auc": auc, "ap": ap, "n_pos": n_pos, "n_neg": n_neg}
    result = {
        "per_class": per_class,
        "macro_auc": _mean_defined(c["auc"] for c in per_class.values()),
        "macro_ap": _mean_defined(c["ap"] for c in per_class.values()),
    }
    if kind == "multiclass":
        predicted = scores.argmax(axis=1)
        defined = len(targets) > 0
        result["accuracy"] = float(accuracy_score(targets, predicted)) if defined else None
        # balanced accuracy: mean recall over the classes present among the targets
        result["balanced_accuracy"] = (
            float(balanced_accuracy_score(targets, predicted)) if defined else None
        )
    return result


def _mean_defined(values) -> float | None:
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


def flat_figures(metrics: dict) -> dict[str, float | None]:
    """The figures of a `classification_metrics` result as flat keys: "macro_auc", ...,
    "per_class/<class>/auc" (the keys `ResampledFigures` returns)."""
    flat = {k: v for k, v in metrics.items() if k != "per_class"}
    for name, figures in metrics["per_class"].items():
        for key in ("auc", "ap"):
            flat[f"per_class/{name}/{key}"] = figures[key]
    return flat


class ResampledFigures:
    """The figures of `classification_metrics` on a resample of the items, given as an index array
    (with repeats), returned flat as by `flat_figures`.

    scikit-learn's roc_auc_score/average_precision_score take sample weights, but cost about a
    millisecond each in input checks; a bootstrap calls this 1,000 times for every class. Here each
    class's scores are sorted once and grouped by tied value, and a resample only turns into
    multiplicities (np.bincount) summed per group: O(N) per class, the same values as scikit-learn
    (Mann-Whitney AUC with ties counted 1/2; AP as sum of (R_n - R_{n-1}) P_n over thresholds),
    checked against it in the tests.

    Macro means in a resample average the classes that are defined on all the items (`defined`), and
    are undefined (None) in a resample where any of those is not: the same set of classes as the
    point estimate, so that the interval is one of the same quantity.
    """

    def __init__(self, targets: np.ndarray, scores: np.ndarray, kind: Kind, classes: Sequence[str]):
        targets, scores = check_inputs(targets, scores, kind, classes)
        self.kind, self.classes, self.n = kind, tuple(classes), len(targets)
        self.columns = []
        for k, (known, y) in enumerate(class_columns(targets, kind, len(classes))):
            items = np.flatnonzero(known)
            s = scores[items, k]
            order = np.argsort(-s, kind="stable")  # descending score
            s_sorted = s[order]
            starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
            self.columns.append((items[order], y[order].astype(np.float64), starts))
        self.defined = [bool(0 < y.sum() < len(y)) for _, y, _ in self.columns]
        if kind == "multiclass":
            self.targets = targets
            self.correct = (scores.argmax(axis=1) == targets).astype(np.float64)

    def __call__(self, indices: np.ndarray) -> dict[str, float | None]:
        counts = np.bincount(indices, minlength=self.n).astype(np.float64)
        figures: dict[str, float | None] = {}
        aucs, aps = [], []
        for name, (items, y, starts) in zip(self.classes, self.columns, strict=True):
            auc, ap = _weighted_auc_ap(counts[items], y, starts)
            figures[f"per_class/{name}/auc"], figures[f"per_class/{name}/ap"] = auc, ap
            aucs.append(auc)
            aps.append(ap)
        figures["macro_auc"] = self._macro(aucs)
        figures["macro_ap"] = self._macro(aps)
        if self.kind == "multiclass":
            total = counts.sum()
            figures["accuracy"] = float(counts @ self.correct / total) if total else None
            # mean over the classes present in the resample of each class's recall
            per_class_n = np.bincount(self.targets, weights=counts, minlength=len(self.classes))
            hits = np.bincount(
                self.targets, weights=counts * self.correct, minlength=len(self.classes)
            )
            present = per_class_n > 0
            figures["balanced_accuracy"] = (
                float(np.mean(hits[present] / per_class_n[present])) if present.any() else None
            )
        return figures

    def _macro(self, values: list[float | None]) -> float | None:
        chosen = [v for v, d in zip(values, self.defined, strict=True) if d]
        if not chosen or any(v is None for v in chosen):
            return None
        return float(np.mean(chosen))


def _weighted_auc_ap(
    weights: np.ndarray, y: np.ndarray, starts: np.ndarray
) -> tuple[float | None, float | None]:
    """ROC AUC and AP of items sorted by descending score, with multiplicities `weights`; `starts`
    are the first positions of each group of tied scores."""
    if not len(y):
        return None, None
    pos = np.add.reduceat(weights * y, starts)  # per tied group, in descending score order
    neg = np.add.reduceat(weights * (1.0 - y), starts)
    total_pos, total_neg = pos.sum(), neg.sum()
    if total_pos == 0 or total_neg == 0:
        return None, None
    neg_above = np.cumsum(neg) - neg  # negatives scored strictly higher than the group
    # pairs (positive, negative) ranked wrongly: the negative higher, or tied (counted 1/2)
    wrong = pos @ (neg_above + 0.5 * neg)
    auc = 1.0 - wrong / (total_pos * total_neg)
    tp, predicted = np.cumsum(pos), np.cumsum(pos + neg)
    # precision at each threshold; groups that no resampled item reaches add no recall
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    ap = float(pos @ precision / total_pos)
    return float(auc), ap
