"""Across-seed statistics of a label-efficiency study: the summary of one cell over its seeds, the
paired comparison of two encoders, and the label saving as the Models Genesis paper reports it.

Rule for the paired test (`paired_comparison`), paired by seed (both encoders saw the same label
subset and the same seed):
- n >= 6 pairs: Wilcoxon signed-rank (scipy.stats.wilcoxon, two-sided, scipy's defaults: zero
  differences dropped, exact null distribution for small n). It assumes no normality.
- 2 <= n < 6: paired t-test (scipy.stats.ttest_rel, two-sided). Wilcoxon's smallest two-sided p is
  1 / 2^(n-1) (all differences of one sign), 0.0625 at n = 5, so below 6 seeds it could never reach
  0.05 however large the difference; the t-test can, at the price of assuming normal differences.
- no p-value (None, with the reason in "note") for n < 2, when every difference is 0 (nothing to
  test: the encoders scored alike on every seed), or for the t-test when the differences are all
  equal but not 0 (their SD is 0, so t is undefined).
scipy is imported inside the functions (it comes with scikit-learn).
"""

import math
from collections.abc import Sequence

import numpy as np

WILCOXON = "wilcoxon signed-rank"
PAIRED_T = "paired t"
MIN_WILCOXON = 6  # smallest n at which a two-sided Wilcoxon p can fall below 0.05 (1/32)


def defined_values(values: Sequence[float | None]) -> list[float]:
    """The finite values (None, NaN and infinities, e.g. an AUC undefined on a seed, left out)."""
    return [float(v) for v in values if _defined(v)]


def paired_comparison(a: Sequence[float | None], b: Sequence[float | None]) -> dict:
    """Compare encoder a with encoder b over seeds (a[i] and b[i] from seed i).

    Returns {"n": complete pairs, "mean_diff": mean of a - b (None without pairs), "p_value":
    two-sided p or None, "test": WILCOXON or PAIRED_T ("" when no test ran), "note": why p is
    None ("" otherwise)}. Pairs where either value is None, NaN or infinite are left out (n
    counts the rest).
    """
    if len(a) != len(b):
        raise ValueError(f"paired values of unequal length: {len(a)} and {len(b)}")
    pairs = [(float(x), float(y)) for x, y in zip(a, b, strict=True) if _defined(x) and _defined(y)]
    n = len(pairs)
    result = {"n": n, "mean_diff": None, "p_value": None, "test": "", "note": ""}
    if not n:
        result["note"] = "no seed with both values"
        return result
    x = np.array([p[0] for p in pairs])
    y = np.array([p[1] for p in pairs])
    diff = x - y
    result["mean_diff"] = float(diff.mean())
    if n < 2:
        result["note"] = "one seed: a paired test needs at least 2"
        return result
    if np.all(diff == 0):
        result["note"] = "every difference is 0: nothing to test"
        return result
    from scipy import stats

    if n >= MIN_WILCOXON:
        result["test"] = WILCOXON
        result["p_value"] = float(stats.wilcoxon(x, y).pvalue)
        return result
    result["test"] = PAIRED_T
    # equal differences (up to rounding of a - b) have SD 0: t is undefined (scipy would warn)
    if np.ptp(diff) <= 1e-12 * max(1.0, float(np.abs(diff).max())):
        result["note"] = "the differences are all equal (SD 0): the t-test is undefined"
        return result
    result["p_value"] = float(stats.ttest_rel(x, y).pvalue)
    return result


def label_saving(
    fractions: Sequence[float],
    means: Sequence[float | None],
    reference_full: float | None,
    *,
    higher_is_better: bool = True,
) -> tuple[float | None, float | None]:
    """(smallest_fraction, saving) as Models Genesis reports the annotation saving.

    `means[i]` is the encoder's mean over seeds at `fractions[i]` (None where it has none);
    `reference_full` is the reference encoder's (training from scratch) mean with all labels
    (fraction 1.0). smallest_fraction is the smallest fraction at which the encoder's mean reaches
    it (>=, or <= when lower is better, e.g. HD95) and saving is 1 - smallest_fraction; both None
    when it never does or there is no reference. The plain definition: a curve that reaches the
    reference at 10% but falls below it at 25% still counts from 10%.
    """
    if len(fractions) != len(means):
        raise ValueError(f"{len(fractions)} fractions and {len(means)} means")
    if not _defined(reference_full):
        return None, None
    reference = float(reference_full)
    for fraction, mean in sorted(zip(fractions, means, strict=True), key=lambda fm: fm[0]):
        if not _defined(mean):
            continue
        reached = mean >= reference if higher_is_better else mean <= reference
        if reached:
            return float(fraction), 1.0 - float(fraction)
    return None, None


def summarise_seeds(
    values: Sequence[float | None],
    ci_single: tuple[float | None, float | None] = (None, None),
    level: float = 0.95,
) -> tuple[float | None, float | None, float | None, float | None]:
    """(mean, sd, ci_low, ci_high) of one cell over its seeds.

    With n >= 2 defined values: the sample SD (ddof 1) and the t-interval of the mean, mean -/+
    t_{(1+level)/2, n-1} * sd / sqrt(n). With one: that value, sd None, and `ci_single` (that run's
    patient-level bootstrap interval). With none: all None. None, NaN and infinite values are left
    out (count the rest with `defined_values`). When every seed gave the same value (a deterministic
    cell: all labels, a frozen encoder and a k-NN), the spread over seeds says nothing about the
    uncertainty: sd 0 and `ci_single`, the bootstrap interval, as for one seed.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    kept = defined_values(values)
    n = len(kept)
    if n == 0:
        return None, None, None, None
    mean = float(np.mean(kept))
    if n == 1:
        low, high = ci_single
        return mean, None, low, high
    from scipy import stats

    sd = float(np.std(kept, ddof=1))
    if sd == 0.0:
        low, high = ci_single
        return mean, 0.0, low, high
    half = float(stats.t.ppf((1.0 + level) / 2.0, n - 1)) * sd / math.sqrt(n)
    return mean, sd, mean - half, mean + half


def _defined(value) -> bool:
    if value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
