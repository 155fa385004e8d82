"""Patient-level bootstrap confidence intervals.

A resample draws as many patients as there are, with replacement, and takes all the items of each
drawn patient (so the items of one patient always move together: their correlation widens the
interval, as it should). The interval is the percentile interval of the statistic over the resamples;
resamples where the statistic is undefined (None or NaN, e.g. an AUC of a resample without positives)
are dropped and counted in `Figure.n_resamples_used`.
"""

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from medfound.errors import ConfigError

Statistic = Callable[[np.ndarray], float | None]
MultiStatistic = Callable[[np.ndarray], dict[str, float | None]]


@dataclass
class Figure:
    """A figure with its bootstrap interval; None where undefined."""

    value: float | None
    low: float | None
    high: float | None
    n_resamples_used: int
    n_resamples: int = 0
    level: float = 0.95

    def to_dict(self) -> dict:
        """JSON-ready dict of the fields."""
        return asdict(self)

    def __str__(self) -> str:
        """'0.912 [0.871, 0.944]', '0.912' without an interval, 'undefined' without a value."""
        if self.value is None:
            return "undefined"
        if self.low is None or self.high is None:
            return f"{self.value:.3f}"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


class PatientResampler:
    """Draws resamples of whole patients as item-index arrays, from a seeded numpy Generator.

    The patient -> items index is built once (items sorted by patient), so a resample is a few
    vectorised operations whatever the number of patients.
    """

    def __init__(self, patients: np.ndarray, seed: int = 0):
        patients = np.asarray(patients)
        if patients.ndim != 1 or not len(patients):
            raise ValueError("patients must be a non-empty 1D array (one entry per item)")
        _, codes = np.unique(patients, return_inverse=True)
        self.order = np.argsort(codes, kind="stable")  # items grouped by patient
        self.sizes = np.bincount(codes)
        self.starts = np.cumsum(self.sizes) - self.sizes
        self.n_patients = len(self.sizes)
        self.rng = np.random.default_rng(seed)

    def sample(self) -> np.ndarray:
        """Item indices of one resample (patients drawn with replacement, all their items)."""
        drawn = self.rng.integers(0, self.n_patients, size=self.n_patients)
        sizes = self.sizes[drawn]
        # position j of the output belongs to drawn patient p = repeat(...)[j] at offset j - first(p)
        first_out = np.cumsum(sizes) - sizes
        offsets = np.arange(sizes.sum()) - np.repeat(first_out, sizes)
        return self.order[np.repeat(self.starts[drawn], sizes) + offsets]


def bootstrap_figures(
    statistic: MultiStatistic,
    patients: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Figure]:
    """Point estimates and intervals of several figures from the same resamples.

    `statistic(indices)` returns {name: value or None}; it is called once on all items (the point
    estimates) and once per resample. Figures undefined on all items get no interval.
    """
    _check(n_resamples, level)
    patients = np.asarray(patients)
    point = statistic(np.arange(len(patients)))
    draws: dict[str, list[float]] = {name: [] for name in point}
    resampler = PatientResampler(patients, seed) if n_resamples else None
    for _ in range(n_resamples):
        values = statistic(resampler.sample())
        for name in draws:
            value = values.get(name)
            if _defined(value):
                draws[name].append(float(value))
    tail = (1.0 - level) / 2.0 * 100.0
    figures = {}
    for name, value in point.items():
        value = float(value) if _defined(value) else None
        used = draws[name] if value is not None else []
        low = high = None
        if used:
            low, high = (float(q) for q in np.percentile(used, [tail, 100.0 - tail]))
        figures[name] = Figure(value, low, high, len(used), n_resamples, level)
    return figures


def bootstrap_figure(
    statistic: Statistic,
    patients: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> Figure:
    """One figure (`statistic(all items)`) with its patient-level percentile interval."""
    figures = bootstrap_figures(
        lambda idx: {"value": statistic(idx)}, patients, n_resamples, seed, level
    )
    return figures["value"]


def bootstrap_ci(
    statistic: Statistic,
    patients: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float | None, float | None]:
    """(low, high) percentile interval of `statistic` over patient-level resamples; (None, None)
    when the statistic is undefined on all items or in every resample. `statistic` receives item
    indices (whole patients, drawn with replacement, so indices repeat) and returns a float, or
    None/NaN where undefined (those resamples are dropped; `bootstrap_figure` counts them)."""
    figure = bootstrap_figure(statistic, patients, n_resamples, seed, level)
    return figure.low, figure.high


def _defined(value) -> bool:
    return value is not None and not math.isnan(float(value))


def _check(n_resamples: int, level: float) -> None:
    if n_resamples < 0:
        raise ConfigError(f"the number of bootstrap resamples must be >= 0, got {n_resamples}")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"the confidence level must lie in (0, 1), got {level}")
