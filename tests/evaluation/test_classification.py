"""Classification metrics against scikit-learn and hand computation; the resampled figures against
scikit-learn on the materialised resample."""

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    roc_auc_score,
)

from medfound.evaluation.classification import (
    ResampledFigures,
    classification_metrics,
    flat_figures,
    headline_metric,
)


def _softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _multiclass(n=120, k=3, seed=0):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, k, n)
    scores = _softmax(rng.normal(size=(n, k)) + 1.5 * np.eye(k)[targets])
    return targets, scores


def test_tiny_binary_case_by_hand():
    # positives 0.35 and 0.8, negatives 0.1 and 0.4: 3 of the 4 pairs ordered right -> AUC 0.75;
    # by descending score: 0.8 (+), 0.4 (-), 0.35 (+): precision 1 at recall 1/2, 2/3 at recall 1
    targets = np.array([0, 0, 1, 1])
    p1 = np.array([0.1, 0.4, 0.35, 0.8])
    m = classification_metrics(targets, np.stack([1 - p1, p1], 1), "multiclass", ("neg", "pos"))
    assert m["per_class"]["pos"]["auc"] == pytest.approx(0.75)
    assert m["per_class"]["pos"]["ap"] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # K = 2: the AUC of class 0 on 1 - p equals class 1's
    assert m["per_class"]["neg"]["auc"] == pytest.approx(0.75)
    assert m["macro_auc"] == pytest.approx(0.75)
    assert m["per_class"]["pos"]["n_pos"] == 2 and m["per_class"]["pos"]["n_neg"] == 2
    # argmax: 0.1 -> neg (right), 0.4 -> neg (right), 0.35 -> neg (wrong), 0.8 -> pos (right)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1.0 + 0.5) / 2)


def test_multiclass_against_scikit_learn():
    targets, scores = _multiclass()
    classes = ("a", "b", "c")
    m = classification_metrics(targets, scores, "multiclass", classes)
    for k, name in enumerate(classes):
        y = (targets == k).astype(int)
        assert m["per_class"][name]["auc"] == pytest.approx(roc_auc_score(y, scores[:, k]))
        assert m["per_class"][name]["ap"] == pytest.approx(average_precision_score(y, scores[:, k]))
        assert m["per_class"][name]["n_pos"] == y.sum()
    assert m["macro_auc"] == pytest.approx(
        roc_auc_score(targets, scores, multi_class="ovr", average="macro")
    )
    predicted = scores.argmax(1)
    assert m["accuracy"] == pytest.approx(accuracy_score(targets, predicted))
    recalls = [np.mean(predicted[targets == k] == k) for k in range(3)]
    assert m["balanced_accuracy"] == pytest.approx(np.mean(recalls))
    assert headline_metric("multiclass") == headline_metric("multilabel") == "macro_auc"


def test_binary_multiclass_matches_the_binary_auc():
    targets, scores = _multiclass(k=2, seed=4)
    m = classification_metrics(targets, scores, "multiclass", ("no", "yes"))
    binary = roc_auc_score(targets, scores[:, 1])
    assert m["per_class"]["yes"]["auc"] == pytest.approx(binary)
    assert m["per_class"]["no"]["auc"] == pytest.approx(binary)
    assert m["macro_auc"] == pytest.approx(binary)


def test_multilabel_single_class_column_and_nan_masking():
    rng = np.random.default_rng(1)
    n = 80
    targets = rng.integers(0, 2, (n, 3)).astype(np.float32)
    targets[:, 1] = 0.0  # one label value only: undefined
    unknown = rng.random(n) < 0.3
    targets[unknown, 2] = np.nan
    scores = rng.random((n, 3))
    m = classification_metrics(targets, scores, "multilabel", ("x", "y", "z"))
    assert m["per_class"]["y"]["auc"] is None and m["per_class"]["y"]["ap"] is None
    assert m["per_class"]["y"]["n_pos"] == 0 and m["per_class"]["y"]["n_neg"] == n
    known = ~unknown
    auc_z = roc_auc_score(targets[known, 2], scores[known, 2])
    ap_z = average_precision_score(targets[known, 2], scores[known, 2])
    assert m["per_class"]["z"]["auc"] == pytest.approx(auc_z)
    assert m["per_class"]["z"]["ap"] == pytest.approx(ap_z)
    assert m["per_class"]["z"]["n_pos"] + m["per_class"]["z"]["n_neg"] == known.sum()
    auc_x = roc_auc_score(targets[:, 0], scores[:, 0])
    assert m["macro_auc"] == pytest.approx((auc_x + auc_z) / 2)  # y left out, not NaN
    assert "accuracy" not in m


def test_no_class_defined_gives_no_macro():
    targets = np.ones((5, 2), np.float32)
    m = classification_metrics(targets, np.full((5, 2), 0.5), "multilabel", ("a", "b"))
    assert m["macro_auc"] is None and m["macro_ap"] is None


def test_shape_errors():
    with pytest.raises(ValueError, match="scores"):
        classification_metrics(np.zeros(4, int), np.zeros((4, 2)), "multiclass", ("a", "b", "c"))
    with pytest.raises(ValueError, match="lie in"):
        classification_metrics(np.array([0, 3]), np.zeros((2, 3)), "multiclass", ("a", "b", "c"))


def test_non_finite_scores_and_odd_targets_are_refused_by_name():
    scores = np.full((4, 2), 0.5)
    scores[2, 1] = np.nan
    targets = np.array([0, 1, 0, 1])
    # without the check, scikit-learn raises its own error and the resampled AUC ranks NaN anywhere
    for compute in (classification_metrics, ResampledFigures):
        with pytest.raises(ValueError, match=r"scores of 1 of 4 items are NaN.*\[2\]"):
            compute(targets, scores, "multiclass", ("a", "b"))
    with pytest.raises(ValueError, match="whole numbers"):
        classification_metrics(np.array([0, np.nan]), np.zeros((2, 2)), "multiclass", ("a", "b"))
    with pytest.raises(ValueError, match="1, 0 or NaN"):
        classification_metrics(
            np.array([[1.0], [0.5], [np.nan]]), np.zeros((3, 1)), "multilabel", ("a",)
        )


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_resampled_figures_equal_scikit_learn_on_the_resample(kind):
    rng = np.random.default_rng(2)
    n, classes = 150, ("a", "b", "c")
    if kind == "multiclass":
        targets, scores = _multiclass(n, 3, seed=2)
        scores = np.round(scores, 1)  # many ties
    else:
        targets = rng.integers(0, 2, (n, 3)).astype(np.float32)
        targets[rng.random(n) < 0.25, 1] = np.nan
        scores = np.round(rng.random((n, 3)), 1)
    resampled = ResampledFigures(targets, scores, kind, classes)
    assert resampled(np.arange(n)) == pytest.approx(
        flat_figures(classification_metrics(targets, scores, kind, classes))
    )
    for _ in range(5):
        idx = rng.integers(0, n, n)  # with repeats
        got = resampled(idx)
        t, s = targets[idx], scores[idx]
        for k, name in enumerate(classes):
            if kind == "multiclass":
                y, sk = (t == k).astype(int), s[:, k]
            else:
                known = ~np.isnan(t[:, k])
                y, sk = t[known, k], s[known, k]
            assert got[f"per_class/{name}/auc"] == pytest.approx(roc_auc_score(y, sk))
            assert got[f"per_class/{name}/ap"] == pytest.approx(average_precision_score(y, sk))
        if kind == "multiclass":
            assert got["accuracy"] == pytest.approx(accuracy_score(t, s.argmax(1)))
            assert got["balanced_accuracy"] == pytest.approx(
                balanced_accuracy_score(t, s.argmax(1))
            )


def test_resampled_macro_is_undefined_when_a_defined_class_is_not():
    targets = np.array([0, 0, 1, 1, 2, 2])
    scores = _softmax(np.random.default_rng(0).normal(size=(6, 3)))
    resampled = ResampledFigures(targets, scores, "multiclass", ("a", "b", "c"))
    got = resampled(np.array([0, 1, 2, 3, 0, 1]))  # no item of class c
    assert got["per_class/c/auc"] is None
    assert got["macro_auc"] is None and got["macro_ap"] is None
    assert got["per_class/a/auc"] is not None
