"""The patient-level bootstrap interval covers the true value of a synthetic problem at about the
nominal rate, for a mean and for an AUC, while pretending each image is its own patient does not.

Each simulated dataset has patients with 1-5 images whose values share a patient effect, so images
of one patient are correlated (as in real data). 200 datasets with 200 resamples each: coverage of a
95% interval is a binomial proportion with SD sqrt(0.95 * 0.05 / 200) ~ 0.015, and the percentile
bootstrap runs a little under nominal with ~50 patients (~0.93), so [0.88, 0.99] holds the expected
coverage with room of 3+ SDs on the low side. The runs are seeded, so the test is deterministic.
"""

import math

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from medfound.evaluation.bootstrap import bootstrap_figure

N_DATASETS = 200
N_RESAMPLES = 200
N_PATIENTS = 50
PATIENT_SD = 1.0  # SD of the patient effect shared by a patient's images
IMAGE_SD = 0.5  # SD of each image's own noise
SHIFT = 1.0  # score shift of positive patients (AUC problem)


def _dataset(rng):
    sizes = rng.integers(1, 6, N_PATIENTS)
    patients = np.repeat(np.arange(N_PATIENTS), sizes).astype(str)
    labels_by_patient = np.arange(N_PATIENTS) % 2  # each patient is positive or negative
    effect = rng.normal(0.0, PATIENT_SD, N_PATIENTS)
    labels = np.repeat(labels_by_patient, sizes)
    values = np.repeat(effect, sizes) + rng.normal(0.0, IMAGE_SD, len(patients)) + SHIFT * labels
    return patients, values, labels


def _auc(scores, labels):
    """AUC as the Mann-Whitney U statistic from mid-ranks, by hand: sklearn's roc_auc_score (and
    scipy's rankdata) cost ~10x more per call, seconds over the 40,000 resamples of this test."""
    n_pos = int(labels.sum())
    n_neg = len(labels) - n_pos
    if not n_pos or not n_neg:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    mid_ranks = np.cumsum(counts) - (counts - 1) / 2.0  # average rank of each distinct value
    rank_sum = mid_ranks[inverse][labels == 1].sum()
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def _coverage(statistic_for, truth, *, per_image=False, seed=0):
    rng = np.random.default_rng(seed)
    covered = 0
    for i in range(N_DATASETS):
        patients, values, labels = _dataset(rng)
        if per_image:  # the naive interval: each image its own patient
            patients = np.arange(len(patients)).astype(str)
        figure = bootstrap_figure(
            statistic_for(values, labels), patients, n_resamples=N_RESAMPLES, seed=i
        )
        covered += figure.low <= truth <= figure.high
    return covered / N_DATASETS


def _mean(values, labels):
    return lambda idx: values[idx].mean()


def _auc_of(values, labels):
    return lambda idx: _auc(values[idx], labels[idx])


def test_mean_interval_covers_at_the_nominal_rate():
    # every image has expectation SHIFT * P(positive) = 0.5 (half the patients are positive), so
    # the mean over images is unbiased for 0.5 whatever the patient sizes
    truth = SHIFT * 0.5
    assert 0.88 <= _coverage(_mean, truth) <= 0.99


def test_auc_interval_covers_at_the_nominal_rate():
    # a positive and a negative image always come from two patients, so their score difference is
    # normal with mean SHIFT and variance 2 * (PATIENT_SD^2 + IMAGE_SD^2)
    truth = norm.cdf(SHIFT / math.sqrt(2 * (PATIENT_SD**2 + IMAGE_SD**2)))
    assert 0.88 <= _coverage(_auc_of, truth, seed=1) <= 0.99


def test_ignoring_patients_undercovers():
    # the same mean with images resampled one by one: too narrow, since images of a patient are
    # correlated (what the patient-level resampling is for); this is what makes the tests above
    # able to fail
    assert _coverage(_mean, SHIFT * 0.5, per_image=True) < 0.85


def test_hand_auc_matches_sklearn():
    rng = np.random.default_rng(5)
    _, values, labels = _dataset(rng)
    values = np.round(values, 1)  # with ties
    assert _auc(values, labels) == pytest.approx(roc_auc_score(labels, values))
    assert _auc(values, np.zeros_like(labels)) is None
