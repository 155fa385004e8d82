"""Probes on frozen embeddings: logistic regression with C chosen by cross-validation, and k-NN.

Both handle multiclass targets (int (N,) in [0, K)) and multilabel ones (float (N, K) of 1/0, NaN
unknown): multilabel fits one model per class on the items whose label for that class is known. A
class with one label value in the training items cannot be learnt: its score is that value for every
item (a constant, so its AUC on the test items is 0.5), and a note says so.
"""

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from medfound.evaluation.classification import Kind, check_kind

# Inverse regularisation strengths tried (on standardised features): 1e-4 ... 1e2, a decade apart.
# Larger C hardly ever wins on embeddings (D in the thousands, N often smaller) and costs the most
# solver iterations.
DEFAULT_CS = tuple(10.0**e for e in range(-4, 3))
DEFAULT_FOLDS = 5
DEFAULT_K = 20
KNN_TEMPERATURE = 0.07  # DINO's k-NN weights exp(cosine / 0.07)


@dataclass
class Probe:
    """A fitted probe: `predict_scores(X)` gives (N, K) probabilities, one column per class."""

    kind: Kind
    n_classes: int
    method: str  # "logistic" or "knn"
    parts: list = field(default_factory=list)  # (class indices, scorer with predict(X) -> (N, k))
    chosen_c: dict[int, float | None] = field(default_factory=dict)  # logistic: per class
    neighbours: dict[int, int] = field(default_factory=dict)  # knn: k used per class
    notes: dict[int | None, str] = field(default_factory=dict)  # per class; None: the one model

    def described_notes(self, classes: Sequence[str]) -> list[str]:
        """The notes as text, 'class NAME: ...' for those of one class."""
        return [
            note if k is None else f"class {classes[k]}: {note}" for k, note in self.notes.items()
        ]

    def predict_scores(self, X: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities (multiclass rows sum to 1; multilabel columns independent)."""
        X = _features(X)
        scores = np.zeros((len(X), self.n_classes))
        for columns, scorer in self.parts:
            scores[:, columns] = scorer.predict(X)
        return scores


def fit_logistic(
    X: np.ndarray,
    targets: np.ndarray,
    kind: Kind,
    groups: np.ndarray | None = None,
    seed: int = 0,
    *,
    n_classes: int | None = None,
    Cs: Sequence[float] = DEFAULT_CS,
    folds: int = DEFAULT_FOLDS,
) -> Probe:
    """Standardised features -> L2 logistic regression, C chosen by `folds`-fold cross-validation
    (log loss) on these items, stratified, grouped by `groups` (patients) when given; then refit on
    all of them. Multiclass: one multinomial model; multilabel: one binary model per class.
    `n_classes` defaults to the targets' (multiclass: their largest value + 1).
    """
    X, targets, n_classes = _inputs(X, targets, kind, n_classes)
    groups = None if groups is None else np.asarray(groups)
    probe = Probe(kind, n_classes, "logistic")
    for columns, rows, y in _tasks(targets, kind, n_classes):
        constant = _constant(y, kind, n_classes)
        if constant is not None:
            scorer, c, note = constant, None, _constant_note(y)
        else:
            g = None if groups is None else groups[rows]
            model, c, note = _fit_one_logistic(X[rows], y, g, seed, Cs, folds)
            scorer = _Columns(model, kind, n_classes)
        probe.parts.append((columns, scorer))
        for k in columns:
            probe.chosen_c[int(k)] = c
        if note:
            probe.notes[_note_key(kind, columns)] = note
    return probe


def fit_knn(
    X: np.ndarray,
    targets: np.ndarray,
    kind: Kind,
    k: int = DEFAULT_K,
    *,
    n_classes: int | None = None,
) -> Probe:
    """k nearest neighbours by cosine similarity (Euclidean on L2-normalised embeddings, the same
    order); a class's score is its share of the neighbours' votes, each weighted by
    exp(cosine / 0.07) as in DINO. k is capped by the training items (per class for multilabel:
    those with a known label)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    X, targets, n_classes = _inputs(X, targets, kind, n_classes)
    X = _l2_normalised(X)
    probe = Probe(kind, n_classes, "knn")
    for columns, rows, y in _tasks(targets, kind, n_classes):
        scorer = _constant(y, kind, n_classes)
        if scorer is not None:
            probe.notes[_note_key(kind, columns)] = _constant_note(y)
        else:
            labels = np.eye(n_classes)[y] if kind == "multiclass" else y[:, None].astype(float)
            scorer = _Knn(X[rows], labels, min(k, len(rows)))
            for c in columns:
                probe.neighbours[int(c)] = min(k, len(rows))
        probe.parts.append((columns, scorer))
    return probe


def _inputs(X, targets, kind, n_classes):
    check_kind(kind)
    X = _features(X)
    targets = np.asarray(targets)
    if len(targets) != len(X):
        raise ValueError(f"{len(X)} feature rows for {len(targets)} targets")
    if not len(X):
        raise ValueError("no training items")
    if kind == "multiclass":
        if targets.ndim != 1:
            raise ValueError(f"multiclass targets must be (N,), got {targets.shape}")
        targets = targets.astype(np.int64)
        n_classes = int(targets.max()) + 1 if n_classes is None else n_classes
        if targets.min() < 0 or targets.max() >= n_classes:
            raise ValueError(f"multiclass targets must lie in [0, {n_classes})")
    else:
        if targets.ndim != 2:
            raise ValueError(f"multilabel targets must be (N, K), got {targets.shape}")
        targets = targets.astype(np.float64)
        n_classes = targets.shape[1] if n_classes is None else n_classes
        if targets.shape[1] != n_classes:
            raise ValueError(f"{targets.shape[1]} target columns for {n_classes} classes")
    return X, targets, n_classes


def _features(X) -> np.ndarray:
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"features must be (N, D), got {X.shape}")
    if not np.isfinite(X).all():
        raise ValueError("features hold NaN or infinite values")
    return X


def _tasks(targets, kind, n_classes):
    """(class columns, training rows, labels) of each model: one multiclass model, or one per
    class of a multilabel problem (on the rows whose label is known)."""
    if kind == "multiclass":
        yield np.arange(n_classes), np.arange(len(targets)), targets
        return
    for c in range(n_classes):
        rows = np.flatnonzero(~np.isnan(targets[:, c]))
        yield np.array([c]), rows, targets[rows, c].astype(np.int64)


def _constant(y, kind, n_classes) -> "_Constant | None":
    """The constant scorer of a model with fewer than two label values to learn from, else None:
    the one value seen (multiclass: its one-hot row), 0.5 for a class without known labels."""
    values = np.unique(y)
    if len(values) >= 2:
        return None
    if kind == "multiclass":
        return _Constant(np.eye(n_classes)[values[0]])
    return _Constant(np.array([float(values[0]) if len(values) else 0.5]))


def _fit_one_logistic(X, y, groups, seed, Cs, folds):
    """(scorer, chosen C or None, note or None) for one model."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits  # a scikit-learn dependency

    splits = _cv_splits(X, y, groups, seed, folds)
    # One BLAS thread: the products here are thin (N x D by D x K), too small to gain from threads,
    # and on a busy machine OpenBLAS's spinning threads made a 3000 x 2048 probe ~8x slower.
    with warnings.catch_warnings(record=True) as caught, threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("always", ConvergenceWarning)
        if splits:
            logistic = LogisticRegressionCV(
                Cs=list(Cs),
                cv=splits,
                scoring="neg_log_loss",
                max_iter=1000,
                random_state=seed,
                **_l2_options(LogisticRegressionCV),
            )
        else:
            logistic = LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
        model = Pipeline([("scale", StandardScaler()), ("logistic", logistic)]).fit(X, y)
    notes = []
    if not splits:
        notes.append("too few items per class (or patient groups) to cross-validate C: C = 1")
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        notes.append("the solver did not converge in 1000 iterations for some C")
    c = float(np.ravel(logistic.C_)[0]) if splits else 1.0
    return model, c, "; ".join(notes) or None


def _l2_options(estimator_class) -> dict:
    """The keywords that ask `estimator_class` (LogisticRegressionCV) for plain L2 without warnings.
    scikit-learn 1.8 wants L2 spelt `l1_ratios=(0.0,)` and added `use_legacy_attributes`; older
    releases, which pyproject allows, lack the latter (a TypeError) and are L2 by default (they warn
    about `l1_ratios` without penalty="elasticnet")."""
    import inspect

    if "use_legacy_attributes" not in inspect.signature(estimator_class).parameters:
        return {}
    return {"l1_ratios": (0.0,), "use_legacy_attributes": False}


def _cv_splits(X, y, groups, seed, folds) -> list:
    """Stratified (and grouped) folds whose training part holds every label; [] when fewer than
    two such folds can be made."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    labels, counts = np.unique(y, return_counts=True)
    n_splits = min(folds, int(counts.min()))
    if groups is not None:
        n_splits = min(n_splits, len(np.unique(groups)))
    if n_splits < 2:
        return []
    if groups is None:
        splitter = StratifiedKFold(n_splits, shuffle=True, random_state=seed)
    else:
        splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
    # grouped folds can leave a label out of a training part (one patient holding all of a class)
    splits = [
        (train, test)
        for train, test in splitter.split(X, y, groups)
        if len(np.unique(y[train])) == len(labels) and len(test)
    ]
    return splits if len(splits) >= 2 else []


def _constant_note(y) -> str:
    if not len(y):
        return "no known label in training: constant score 0.5"
    return f"one label value ({int(y[0])}) in training: constant score"


def _note_key(kind, columns) -> int | None:
    return int(columns[0]) if kind == "multilabel" else None


def _l2_normalised(X: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.maximum(norms, 1e-12)


class _Columns:
    """A fitted scikit-learn classifier's probabilities in the probe's columns: multiclass columns
    follow `classes_` (a class absent from training scores 0); a binary model gives P(label 1)."""

    def __init__(self, model, kind, n_classes):
        self.model, self.kind, self.n_classes = model, kind, n_classes

    def predict(self, X):
        proba = self.model.predict_proba(X)
        seen = np.asarray(self.model.classes_, dtype=np.int64)
        if self.kind == "multilabel":
            return proba[:, list(seen).index(1)][:, None]
        out = np.zeros((len(X), self.n_classes))
        out[:, seen] = proba
        return out


class _Constant:
    def __init__(self, values: np.ndarray):
        self.values = np.asarray(values, dtype=np.float64)

    def predict(self, X):
        return np.broadcast_to(self.values, (len(X), len(self.values))).copy()


class _Knn:
    """Similarity-weighted k-NN (DINO's evaluation protocol): a class's score is the share of the
    neighbours' votes weighted by exp(cosine / KNN_TEMPERATURE). Uniform votes would make every
    item's score the same once k reaches the training items (a small label subset), so the k-NN of a
    1% subset would say nothing; weighted votes still rank the items. Written here: scikit-learn's
    KNeighborsClassifier weighs only by inverse distance and scores one output."""

    def __init__(self, X, labels, k):
        from sklearn.neighbors import NearestNeighbors

        self.index = NearestNeighbors(n_neighbors=k, algorithm="brute").fit(X)
        self.labels, self.k = labels, k

    def predict(self, X):
        distances, neighbours = self.index.kneighbors(_l2_normalised(X))
        cosine = 1.0 - distances**2 / 2  # unit vectors: |a - b|^2 = 2 - 2 cos
        # shifted by each row's largest before exp: the same weights, no overflow
        weights = np.exp((cosine - cosine.max(axis=1, keepdims=True)) / KNN_TEMPERATURE)
        votes = np.einsum("nk,nkc->nc", weights, self.labels[neighbours])
        return votes / weights.sum(axis=1, keepdims=True)
