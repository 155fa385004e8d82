"""Train/val/test splits by patient: every image of a patient goes to the same split, chosen by a
seeded hash of the patient, so the split does not depend on the order of the items."""

import csv
import hashlib
import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.data.labels import SPLITS, normalise_splits
from medfound.errors import ConfigError, first_items
from medfound.files import atomic_write


def assign_splits(
    patients: np.ndarray,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    given: np.ndarray | None = None,
) -> np.ndarray:
    """The split ("train"/"val"/"test") of each item, whole patients to one split.

    `fractions` are the shares of patients (not of images) in train, val and test; rounded to whole
    patients, with at least one patient in train, and at least one in each split that is asked for
    whenever there are enough patients to go round (three when val and test both are). Patients are
    ordered by a hash of (seed, patient), so the result depends on the seed and the set of patients,
    never on the order of the items.

    `given` (the data's own splits) is used as is after checking it: its values must name splits
    (train, val/valid/validation, test) and no patient may appear in two of them.
    """
    patients = np.asarray(patients, dtype=str)
    if given is not None:
        return _checked_given(patients, given)
    fractions = _checked_fractions(fractions)
    unique = sorted(set(patients.tolist()), key=lambda p: (_hash(seed, p), p))
    counts = _split_counts(len(unique), fractions)
    split_of = {}
    start = 0
    for name, count in zip(SPLITS, counts, strict=True):
        for patient in unique[start : start + count]:
            split_of[patient] = name
        start += count
    return np.asarray([split_of[p] for p in patients.tolist()], dtype=str)


def _hash(seed: int, patient: str) -> int:
    # blake2b, not hash(): Python salts str hashes per process.
    digest = hashlib.blake2b(f"{int(seed)}\0{patient}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _checked_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(f) for f in fractions)
    if (
        len(values) != 3
        or not all(math.isfinite(f) and f >= 0 for f in values)
        or abs(sum(values) - 1.0) > 1e-6
        or values[0] <= 0
    ):
        raise ConfigError(
            f"split fractions {list(fractions)}: need three shares (train, val, test) that are "
            f"not negative and sum to 1, with train above 0"
        )
    return values  # type: ignore[return-value]


def _split_counts(n: int, fractions: tuple[float, float, float]) -> list[int]:
    """Patients per split: largest-remainder rounding of n * fractions; then train gets a patient
    if it has none (rounding can give small train shares none), and, when n allows, so does every
    other split asked for (fraction > 0). A patient is taken from the split with the most to spare
    (the later split on ties), never leaving a split already served empty."""
    wanted = [f * n for f in fractions]
    counts = [math.floor(w) for w in wanted]
    by_remainder = sorted(range(3), key=lambda s: (counts[s] - wanted[s], s))
    for s in by_remainder[: n - sum(counts)]:
        counts[s] += 1
    asked = [s for s in range(3) if fractions[s] > 0]  # train always (its fraction is > 0)
    served: list[int] = []
    for s in asked if n >= len(asked) else asked[: min(n, 1)]:
        if counts[s] == 0:
            donor = max(
                (d for d in range(3) if d != s), key=lambda d: (counts[d] - (d in served), d)
            )
            counts[donor] -= 1
            counts[s] += 1
        served.append(s)
    return counts


def _checked_given(patients: np.ndarray, given: np.ndarray) -> np.ndarray:
    given = np.asarray(given)
    if given.shape != patients.shape:
        raise ConfigError(f"{len(given)} given splits for {len(patients)} items")
    splits = normalise_splits(given.tolist(), "given splits")
    seen: dict[str, set[str]] = defaultdict(set)
    for patient, split in zip(patients.tolist(), splits.tolist(), strict=True):
        seen[patient].add(split)
    spread = [
        f"{p} ({', '.join(s for s in SPLITS if s in found)})"
        for p, found in seen.items()
        if len(found) > 1
    ]
    if spread:
        raise ConfigError(
            f"the given splits put {len(spread)} patient(s) in more than one split: "
            f"{first_items(spread)}"
        )
    return splits


def write_splits(
    path: str | Path, ids: Sequence[str], patients: Sequence[str], splits: Sequence[str]
) -> None:
    """Write the CSV `id,patient,split` (one row per item, atomically)."""
    if not len(ids) == len(patients) == len(splits):
        raise ValueError(f"{len(ids)} ids, {len(patients)} patients, {len(splits)} splits")

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "patient", "split"])
            out.writerows(zip(ids, patients, splits, strict=True))

    atomic_write(path, write)
