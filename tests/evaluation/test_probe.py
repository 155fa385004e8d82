"""Probes: separable data learnt, C chosen by cross-validation and recorded, multilabel with unknown
labels (compared with scikit-learn fitted on the known rows), k-NN against a brute-force numpy k-NN."""

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from medfound.evaluation.classification import classification_metrics
from medfound.evaluation.probe import DEFAULT_CS, _cv_splits, _l2_options, fit_knn, fit_logistic


def _blobs(n, k=3, d=16, seed=0, spread=0.6):
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(k, d)) * 2
    targets = rng.integers(0, k, n)
    return centres[targets] + spread * rng.normal(size=(n, d)), targets


def test_logistic_on_separable_multiclass_data():
    X, y = _blobs(240)
    patients = np.array([f"p{i // 2}" for i in range(240)])
    probe = fit_logistic(X[:160], y[:160], "multiclass", groups=patients[:160], seed=0)
    scores = probe.predict_scores(X[160:])
    assert scores.shape == (80, 3)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0)
    m = classification_metrics(y[160:], scores, "multiclass", ("a", "b", "c"))
    assert m["macro_auc"] > 0.99 and m["accuracy"] > 0.95
    assert set(probe.chosen_c) == {0, 1, 2}
    assert len(set(probe.chosen_c.values())) == 1  # one multinomial model, one C
    assert probe.chosen_c[0] in DEFAULT_CS
    assert probe.notes == {}


def test_chosen_c_follows_the_data():
    # many noise features and few items: strong regularisation wins; clean separable data: weak
    rng = np.random.default_rng(1)
    y = np.tile([0, 1], 40)
    noisy = rng.normal(size=(80, 200))
    noisy[:, 0] += 0.4 * y
    clean, _ = _blobs(80, k=2, seed=2, spread=0.05)
    clean_y = _blobs(80, k=2, seed=2, spread=0.05)[1]
    c_noisy = fit_logistic(noisy, y, "multiclass").chosen_c[1]
    c_clean = fit_logistic(clean, clean_y, "multiclass").chosen_c[1]
    assert c_noisy < c_clean


def test_grouped_folds_never_split_a_patient():
    X, y = _blobs(90, k=2, seed=3)
    groups = np.array([f"p{i % 30}" for i in range(90)])
    splits = _cv_splits(X, y, groups, seed=0, folds=5)
    assert len(splits) == 5
    for train, test in splits:
        assert not set(groups[train]) & set(groups[test])


def test_multilabel_with_unknown_labels_and_a_one_valued_class():
    rng = np.random.default_rng(4)
    n, d = 150, 12
    X = rng.normal(size=(n, d))
    targets = np.stack(
        [(X[:, 0] > 0), (X[:, 1] + 0.5 * rng.normal(size=n) > 0), np.zeros(n, bool)], axis=1
    ).astype(np.float32)
    targets[rng.random(n) < 0.3, 1] = np.nan
    targets[rng.random(n) < 0.2, 2] = np.nan
    probe = fit_logistic(X, targets, "multilabel", seed=0)
    scores = probe.predict_scores(X)
    assert scores.shape == (n, 3)
    # class 1 equals scikit-learn fitted on its known rows only with the chosen C
    known = ~np.isnan(targets[:, 1])
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=probe.chosen_c[1]))
    reference.fit(X[known], targets[known, 1])
    # (solver tolerance 1e-4: the probabilities agree to ~1e-3; unknown rows read as 0 would move
    # them by far more)
    np.testing.assert_allclose(scores[:, 1], reference.predict_proba(X)[:, 1], atol=5e-3)
    # class 2 has one value: constant 0, noted, no C
    assert probe.chosen_c[2] is None and np.all(scores[:, 2] == 0.0)
    assert list(probe.notes) == [2] and probe.notes[2].startswith("one label value (0)")
    assert probe.described_notes(["a", "b", "c"])[0].startswith("class c: one label value")
    m = classification_metrics(targets, scores, "multilabel", ("a", "b", "c"))
    assert m["per_class"]["a"]["auc"] > 0.98


def test_knn_matches_brute_force_numpy():
    rng = np.random.default_rng(5)
    train, test = rng.normal(size=(40, 8)), rng.normal(size=(10, 8))
    y = rng.integers(0, 3, 40)
    k = 7
    probe = fit_knn(train * rng.uniform(0.5, 3, (40, 1)), y, "multiclass", k=k)  # scale: cosine
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    similarity = unit(test) @ unit(train).T
    expected = np.zeros((10, 3))
    for i, row in enumerate(similarity):
        nearest = np.argsort(-row)[:k]
        weights = np.exp(row[nearest] / 0.07)
        expected[i] = np.bincount(y[nearest], weights=weights, minlength=3) / weights.sum()
    # the training vectors were rescaled row-wise: cosine neighbours are those of `train`
    np.testing.assert_allclose(probe.predict_scores(test), expected)
    assert probe.neighbours == {0: 7, 1: 7, 2: 7}


def test_knn_multilabel_uses_known_rows_and_caps_k():
    rng = np.random.default_rng(6)
    X = rng.normal(size=(12, 4))
    targets = rng.integers(0, 2, (12, 2)).astype(np.float32)
    targets[:3, 0] = 1
    targets[3:5, 0] = 0
    targets[5:, 0] = np.nan  # 5 known rows for class 0
    probe = fit_knn(X, targets, "multilabel", k=20)
    assert probe.neighbours == {0: 5, 1: 12}
    # k capped at the known rows: every item's neighbours are all of them, and the weighted votes
    # still rank items by their nearest rows (uniform votes would give every item 3/5)
    queries = rng.normal(size=(3, 4))
    scores = probe.predict_scores(queries)
    unit = lambda a: a / np.linalg.norm(a, axis=1, keepdims=True)  # noqa: E731
    weights = np.exp(unit(queries) @ unit(X[:5]).T / 0.07)
    np.testing.assert_allclose(scores[:, 0], weights @ targets[:5, 0] / weights.sum(axis=1))
    assert np.ptp(scores[:, 0]) > 0.05


def test_a_single_training_class_gives_a_constant_score():
    X = np.random.default_rng(7).normal(size=(6, 3))
    probe = fit_logistic(X, np.full(6, 1), "multiclass", n_classes=3)
    np.testing.assert_array_equal(probe.predict_scores(X), np.tile([0.0, 1.0, 0.0], (6, 1)))
    assert "constant" in probe.notes[None]


def test_too_few_items_to_cross_validate_falls_back_to_c_1_and_says_so():
    X, y = _blobs(7, k=2, seed=8)
    y[:] = [0, 0, 0, 0, 0, 0, 1]
    probe = fit_logistic(X, y, "multiclass")
    assert probe.chosen_c == {0: 1.0, 1: 1.0}
    assert "C = 1" in probe.notes[None]


def test_a_class_absent_from_training_scores_zero():
    X, y = _blobs(60, k=3, seed=9)
    keep = y != 1
    for probe in (
        fit_logistic(X[keep], y[keep], "multiclass", n_classes=3),
        fit_knn(X[keep], y[keep], "multiclass", k=5, n_classes=3),
    ):
        scores = probe.predict_scores(X)
        assert scores.shape == (60, 3) and np.all(scores[:, 1] == 0)
        np.testing.assert_allclose(scores.sum(axis=1), 1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="NaN"):
        fit_knn(np.array([[np.nan, 1.0], [0.0, 1.0]]), np.array([0, 1]), "multiclass")
    with pytest.raises(ValueError, match="targets"):
        fit_logistic(np.zeros((3, 2)), np.zeros(4), "multiclass")


def test_l2_keywords_only_for_scikit_learn_releases_that_take_them():
    from sklearn.linear_model import LogisticRegressionCV

    class Before18:  # LogisticRegressionCV's keywords before scikit-learn 1.8 (pyproject: >= 1.3)
        def __init__(self, *, Cs=10, cv=None, penalty="l2", l1_ratios=None, random_state=None):
            pass

    assert _l2_options(Before18) == {}
    options = _l2_options(LogisticRegressionCV)
    LogisticRegressionCV(**options)  # accepted by the installed release
    if options:
        assert options == {"l1_ratios": (0.0,), "use_legacy_attributes": False}
