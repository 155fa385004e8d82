"""Patient-level bootstrap: whole patients move together, seeded, undefined resamples counted,
percentile intervals of the recorded statistics, narrower with more patients, and fast enough."""

import time

import numpy as np
import pytest

from medfound.errors import ConfigError
from medfound.evaluation.bootstrap import (
    Figure,
    PatientResampler,
    bootstrap_ci,
    bootstrap_figure,
    bootstrap_figures,
)
from medfound.evaluation.classification import ResampledFigures


def _data(n_patients, per_patient=3, seed=0):
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i}" for i in range(n_patients)], per_patient)
    values = rng.normal(1.0, 1.0, len(patients))
    return patients, values


def test_items_of_a_patient_move_together():
    rng = np.random.default_rng(0)
    patients = np.array([f"p{i}" for i in rng.integers(0, 12, 60)])  # uneven, interleaved
    recorded = []

    def statistic(idx):
        recorded.append(idx.copy())
        return 0.0

    bootstrap_figure(statistic, patients, n_resamples=50, seed=1)
    assert len(recorded) == 51  # the point estimate, then the resamples
    assert sorted(recorded[0]) == list(range(60))
    n_patients = len(set(patients))
    for idx in recorded[1:]:
        counts = np.bincount(idx, minlength=60)
        draws = {}
        for item, patient in enumerate(patients):
            draws.setdefault(patient, set()).add(int(counts[item]))
        # every item of a patient appears as often as the patient was drawn
        assert all(len(times) == 1 for times in draws.values())
        assert sum(times.pop() for times in draws.values()) == n_patients


def test_interval_is_the_percentile_interval_of_the_resampled_values():
    patients, values = _data(40)
    seen = []

    def mean(idx):
        seen.append(values[idx].mean())
        return seen[-1]

    figure = bootstrap_figure(mean, patients, n_resamples=300, seed=3)
    resampled = np.array(seen[1:])
    assert figure.value == pytest.approx(values.mean())
    assert figure.low == pytest.approx(np.percentile(resampled, 2.5))
    assert figure.high == pytest.approx(np.percentile(resampled, 97.5))
    assert figure.low < figure.value < figure.high
    assert figure.n_resamples_used == 300 == figure.n_resamples
    assert bootstrap_ci(mean, patients, n_resamples=300, seed=3) == (figure.low, figure.high)


def test_seeded():
    patients, values = _data(30)

    def mean(idx):
        return values[idx].mean()

    a = bootstrap_ci(mean, patients, n_resamples=200, seed=5)
    assert a == bootstrap_ci(mean, patients, n_resamples=200, seed=5)
    assert a != bootstrap_ci(mean, patients, n_resamples=200, seed=6)


def test_undefined_resamples_are_dropped_and_counted():
    patients, values = _data(6, per_patient=2)
    present = []

    def needs_p0(idx):
        has = bool(np.any(patients[idx] == "p0"))
        present.append(has)
        if not has:
            return None if len(present) % 2 else float("nan")  # both spellings of undefined
        return float(values[idx].mean())

    figure = bootstrap_figure(needs_p0, patients, n_resamples=200, seed=0)
    expected = sum(present[1:])
    assert 0 < expected < 200  # (5/6)^6 of the resamples lack p0: about a third
    assert figure.n_resamples_used == expected
    assert figure.low is not None and np.isfinite(figure.low)


def test_several_figures_from_the_same_resamples():
    patients, values = _data(25)
    figures = bootstrap_figures(
        lambda idx: {"mean": values[idx].mean(), "never": None}, patients, n_resamples=100
    )
    assert figures["never"] == Figure(None, None, None, 0, 100, 0.95)
    assert figures["mean"].n_resamples_used == 100
    assert str(figures["never"]) == "undefined"
    assert figures["mean"].to_dict()["n_resamples_used"] == 100


def test_width_shrinks_with_more_patients():
    def width(n_patients):
        patients, values = _data(n_patients, seed=n_patients)
        low, high = bootstrap_ci(lambda idx: values[idx].mean(), patients, n_resamples=300)
        return high - low

    assert width(400) < 0.5 * width(25)  # sd of the mean ~ 1/sqrt(n): about 4x narrower


def test_bad_arguments():
    with pytest.raises(ConfigError, match="resamples"):
        bootstrap_ci(lambda idx: 0.0, np.array(["a"]), n_resamples=-1)
    with pytest.raises(ConfigError, match="level"):
        bootstrap_ci(lambda idx: 0.0, np.array(["a"]), level=1.5)
    with pytest.raises(ValueError, match="non-empty"):
        PatientResampler(np.array([]))


def test_a_thousand_resamples_of_auc_and_ap_take_well_under_seconds():
    rng = np.random.default_rng(0)
    n = 3000
    targets = rng.integers(0, 2, n)
    scores = np.stack([1 - (p := rng.random(n)), p], axis=1)
    patients = np.array([f"p{i // 2}" for i in range(n)])
    statistic = ResampledFigures(targets, scores, "multiclass", ("no", "yes"))
    started = time.perf_counter()
    figures = bootstrap_figures(statistic, patients, n_resamples=1000, seed=0)
    elapsed = time.perf_counter() - started
    assert figures["macro_auc"].n_resamples_used == 1000
    assert elapsed < 10.0, elapsed  # about 0.5 s here; generous for a shared machine
