"""Across-seed statistics: the paired test against scipy and hand computation (and its rule for
few seeds), the Genesis label saving on constructed curves, and the seed summary's t-interval
against scipy.stats.t.interval."""

import math
import statistics

import numpy as np
import pytest
from scipy import stats

from medfound.evaluation.comparison import (
    PAIRED_T,
    WILCOXON,
    defined_values,
    label_saving,
    paired_comparison,
    summarise_seeds,
)


def test_wilcoxon_from_six_seeds_matches_scipy_and_the_exact_hand_value():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.7, 0.8, 8)
    a = b + rng.normal(0.01, 0.02, 8)
    result = paired_comparison(a.tolist(), b.tolist())
    assert result["test"] == WILCOXON and result["n"] == 8
    assert result["p_value"] == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert result["mean_diff"] == pytest.approx(float(np.mean(a - b)))
    # six seeds all better: the exact two-sided p is 2 / 2^6 (one of 64 sign patterns per side)
    b6 = [0.8, 0.75, 0.7, 0.6, 0.9, 0.74]
    gains = [0.01, 0.03, 0.02, 0.06, 0.05, 0.04]  # distinct: no ties in the ranks
    six = paired_comparison([x + d for x, d in zip(b6, gains, strict=True)], b6)
    assert six["test"] == WILCOXON
    assert six["p_value"] == pytest.approx(2 / 2**6)


def test_paired_t_below_six_seeds_matches_hand_computation():
    a = [0.82, 0.85, 0.80, 0.86, 0.84]
    b = [0.80, 0.81, 0.79, 0.80, 0.83]
    result = paired_comparison(a, b)
    assert result["test"] == PAIRED_T and result["n"] == 5
    d = [x - y for x, y in zip(a, b, strict=True)]
    t = statistics.mean(d) / (statistics.stdev(d) / math.sqrt(len(d)))
    assert result["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    assert result["p_value"] == pytest.approx(stats.ttest_rel(a, b).pvalue)
    assert result["mean_diff"] == pytest.approx(statistics.mean(d))


def test_undefined_pairs_are_left_out():
    a = [0.9, None, 0.8, float("nan"), 0.85, 0.7, 0.95, 0.75, 0.88]
    b = [0.8, 0.7, 0.75, 0.6, 0.7, 0.6, 0.9, 0.74, None]
    result = paired_comparison(a, b)
    kept_a = [0.9, 0.8, 0.85, 0.7, 0.95, 0.75]
    kept_b = [0.8, 0.75, 0.7, 0.6, 0.9, 0.74]
    assert result["n"] == 6
    assert result["p_value"] == pytest.approx(stats.wilcoxon(kept_a, kept_b).pvalue)
    assert defined_values([1.0, None, float("nan"), float("inf"), 2]) == [1.0, 2.0]


@pytest.mark.parametrize(
    ("a", "b", "note"),
    [
        ([], [], "no seed"),
        ([0.9], [0.8], "one seed"),
        ([0.8, 0.7, 0.9], [0.8, 0.7, 0.9], "every difference is 0"),
        ([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3], "is 0"),
        ([0.9, 0.8, 0.7], [0.8, 0.7, 0.6], "SD 0"),  # equal differences up to rounding
    ],
)
def test_no_p_value_where_no_test_applies(a, b, note):
    result = paired_comparison(a, b)
    assert result["p_value"] is None
    assert note in result["note"]
    if a:
        assert result["mean_diff"] == pytest.approx(np.mean(np.subtract(a, b)))


def test_unequal_lengths_refused():
    with pytest.raises(ValueError, match="unequal"):
        paired_comparison([0.1, 0.2], [0.1])


def test_label_saving_on_a_constructed_curve():
    fractions = [0.01, 0.05, 0.1, 0.25, 0.5, 1.0]
    scratch_full = 0.80
    pretrained = [0.60, 0.70, 0.78, 0.81, 0.83, 0.86]  # reaches 0.80 first at 25%
    assert label_saving(fractions, pretrained, scratch_full) == (0.25, pytest.approx(0.75))
    # the order the fractions come in does not matter
    assert label_saving(fractions[::-1], pretrained[::-1], scratch_full)[0] == 0.25
    # reaching exactly counts; a missing mean is skipped
    assert label_saving([0.1, 0.5, 1.0], [None, 0.80, 0.9], 0.80) == (0.5, pytest.approx(0.5))
    # never reaching, or no reference: no saving
    assert label_saving(fractions, [0.5] * 6, scratch_full) == (None, None)
    assert label_saving(fractions, pretrained, None) == (None, None)
    # lower is better (a distance in mm): reached when at or below the reference
    hd95 = [12.0, 9.0, 6.5, 5.0, 4.0, 3.5]
    assert label_saving(fractions, hd95, 6.5, higher_is_better=False) == (0.1, pytest.approx(0.9))


def test_summary_over_seeds_matches_scipy_t_interval():
    values = [0.81, 0.84, 0.79, 0.86, 0.83]
    mean, sd, low, high = summarise_seeds(values, ci_single=(0.0, 1.0))
    assert mean == pytest.approx(statistics.mean(values))
    assert sd == pytest.approx(statistics.stdev(values))
    ref = stats.t.interval(0.95, len(values) - 1, loc=mean, scale=stats.sem(values))
    assert (low, high) == pytest.approx(ref)
    low90, high90 = summarise_seeds(values, level=0.9)[2:]
    assert low < low90 < high90 < high


def test_summary_of_one_seed_uses_its_bootstrap_interval():
    assert summarise_seeds([0.8, None], ci_single=(0.7, 0.9)) == (0.8, None, 0.7, 0.9)
    assert summarise_seeds([None, float("nan")], ci_single=(0.7, 0.9)) == (None,) * 4
    two = summarise_seeds([0.8, 0.9, None])
    assert two[2] == pytest.approx(0.85 - stats.t.ppf(0.975, 1) * stats.sem([0.8, 0.9]))


def test_seeds_that_all_agree_fall_back_to_the_bootstrap_interval():
    # a deterministic cell (all labels, frozen encoder, k-NN): a zero-width t-interval would claim
    # certainty the patient bootstrap does not support
    assert summarise_seeds([0.9, 0.9, 0.9], ci_single=(0.8, 0.97)) == (0.9, 0.0, 0.8, 0.97)
