"""Label subsets of a label-efficiency study: nested, per patient, inside the training split.

For each label fraction f the training subset is the training items of the first
ceil(f * n_train_patients) training patients (at least one) in a seeded order of those patients. So
the subsets are nested by construction (the 5% subset contains the 1% one), a patient's training
items are all in or all out, and no item outside the training split is ever drawn. The order is a
keyed hash of (seed, patient), not a shuffle of the items, so it depends on the seed and the set of
training patients only, never on the order of the items; the study draws the subsets once per seed
and gives every encoder the same ones.

`write_subsets` / `read_subsets` keep them as STUDY_DIR/subsets.csv: id, patient, split and a 0/1
column `in_<fraction>` per fraction.
"""

import csv
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound.errors import ConfigError, first_items
from medfound.files import atomic_write

COLUMN_PREFIX = "in_"
# f * n is computed in floating point: 0.07 * 100 == 7.000000000000001, whose plain ceil is 8.
_CEIL_SLACK = 1e-9


def check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """The label fractions sorted ascending, duplicates removed; ConfigError naming the values that
    are not numbers in (0, 1] or when there are none."""
    values = []
    bad = []
    for f in fractions:
        try:
            value = float(f)
        except (TypeError, ValueError):
            bad.append(repr(f))
            continue
        if not (math.isfinite(value) and 0.0 < value <= 1.0):
            bad.append(repr(f))
        values.append(value)
    if bad:
        raise ConfigError(
            f"label fractions must lie in (0, 1] (1.0 = all training labels), got "
            f"{first_items(bad)}"
        )
    if not values:
        raise ConfigError("no label fractions given: list at least one in (0, 1], e.g. [0.1, 1.0]")
    return tuple(sorted(set(values)))


def patients_per_fraction(n_train_patients: int, fractions: Sequence[float]) -> dict[float, int]:
    """How many training patients each fraction takes: ceil(f * n), at least 1, at most n."""
    if n_train_patients < 1:
        raise ConfigError("the training split has no patients: no label subsets can be drawn")
    return {
        f: min(n_train_patients, max(1, math.ceil(f * n_train_patients - _CEIL_SLACK)))
        for f in check_fractions(fractions)
    }


def training_patient_order(patients: np.ndarray, train_mask: np.ndarray, seed: int) -> list[str]:
    """The training patients in the seeded order from which the subsets take their first ones."""
    patients, train_mask = _checked_arrays(patients, train_mask)
    training = set(patients[train_mask].tolist())
    return sorted(training, key=lambda p: (_order_key(seed, p), p))


def nested_subsets(
    patients: np.ndarray, train_mask: np.ndarray, fractions: Sequence[float], seed: int
) -> dict[float, np.ndarray]:
    """For each fraction (sorted ascending, duplicates removed) a boolean mask over all items: the
    training items of the first ceil(fraction * n_train_patients) training patients (at least one)
    in the seeded order of `training_patient_order`. Fraction 1.0 is the whole training split.

    `train_mask` must be the training split itself, patient-level (ConfigError naming the patients
    with items on both sides of it): pass the split, not a mask of the items that were read well,
    so that subsets stay identical across encoders whose unreadable items may differ.
    """
    patients, train_mask = _checked_arrays(patients, train_mask)
    mixed = sorted(set(patients[train_mask].tolist()) & set(patients[~train_mask].tolist()))
    if mixed:
        raise ConfigError(
            f"{len(mixed)} patient(s) have items both inside and outside the training split, so a "
            f"training subset would leak held-out patients: {first_items(mixed)}"
        )
    order = training_patient_order(patients, train_mask, seed)
    rank = {p: r for r, p in enumerate(order)}
    # rank of each item's patient; items outside train get a rank no subset reaches
    item_rank = np.array([rank.get(p, len(order)) for p in patients.tolist()], dtype=np.int64)
    counts = patients_per_fraction(len(order), fractions)
    return {f: (item_rank < k) & train_mask for f, k in counts.items()}


def subset_sizes(patients: np.ndarray, subsets: dict[float, np.ndarray]) -> dict[float, dict]:
    """{fraction: {"items": n, "patients": n}} of each subset, for the study's tables."""
    patients = np.asarray(patients, dtype=str)
    return {
        f: {"items": int(mask.sum()), "patients": len(set(patients[mask].tolist()))}
        for f, mask in subsets.items()
    }


def subset_label_counts(
    targets: np.ndarray, kind: str, mask: np.ndarray, classes: Sequence[str] | None = None
) -> dict[str, dict[str, int]]:
    """{class: {"n_pos": n, "n_neg": n}} over the items in `mask` (one-vs-rest for multiclass;
    multilabel NaN targets counted in neither), so a study can report the subsets (often at 1%)
    where a class has no positive or no negative and its AUC is undefined. `classes` name the
    classes (multiclass: index k is classes[k]); without them, their indices."""
    mask = np.asarray(mask, dtype=bool)
    targets = np.asarray(targets)
    if len(mask) != len(targets):
        raise ValueError(f"{len(mask)} mask entries for {len(targets)} targets")
    chosen = targets[mask]
    if kind == "multiclass":
        k = len(classes) if classes is not None else int(targets.max(initial=-1)) + 1
        pos = np.bincount(chosen.astype(np.int64), minlength=k)
        neg = len(chosen) - pos
    elif kind == "multilabel":
        k = targets.shape[1]
        pos = np.sum(chosen == 1, axis=0)
        neg = np.sum(chosen == 0, axis=0)
    else:
        raise ValueError(f"kind must be 'multiclass' or 'multilabel', got {kind!r}")
    names = [str(c) for c in classes] if classes is not None else [str(i) for i in range(k)]
    if len(names) != len(pos):
        raise ValueError(f"{len(names)} class names for {len(pos)} classes")
    return {c: {"n_pos": int(p), "n_neg": int(n)} for c, p, n in zip(names, pos, neg, strict=True)}


def fraction_column(fraction: float) -> str:
    """The subsets.csv column of a fraction: `in_0.01`, `in_0.25`, `in_1.0` (Python's shortest
    round-tripping float repr, so reading the column name back gives the same float)."""
    return f"{COLUMN_PREFIX}{float(fraction)!r}"


@dataclass
class LabelSubsets:
    """The contents of a subsets.csv: one row per item, one boolean mask per fraction."""

    ids: list[str]
    patients: np.ndarray
    splits: np.ndarray
    subsets: dict[float, np.ndarray]

    @property
    def fractions(self) -> tuple[float, ...]:
        """The fractions, ascending."""
        return tuple(sorted(self.subsets))


def write_subsets(
    path: str | Path,
    ids: Sequence[str],
    patients: Sequence[str],
    splits: Sequence[str],
    subsets: dict[float, np.ndarray],
) -> None:
    """Write subsets.csv atomically: id, patient, split, then `in_<fraction>` (1/0) per fraction,
    ascending."""
    n = len(ids)
    if not n == len(patients) == len(splits) or any(len(m) != n for m in subsets.values()):
        raise ValueError(
            f"{n} ids, {len(patients)} patients, {len(splits)} splits, subset masks of "
            f"{sorted({len(m) for m in subsets.values()})} items"
        )
    fractions = check_fractions(list(subsets))
    masks = [np.asarray(subsets[f], dtype=bool) for f in fractions]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            out = csv.writer(fh)
            out.writerow(["id", "patient", "split", *map(fraction_column, fractions)])
            for i, (item, patient, split) in enumerate(zip(ids, patients, splits, strict=True)):
                out.writerow([item, patient, split, *(int(m[i]) for m in masks)])

    atomic_write(path, write)


def read_subsets(path: str | Path) -> LabelSubsets:
    """Read a subsets.csv written by `write_subsets`; ConfigError naming the file and what is wrong
    (missing columns, a column name that is no fraction, values other than 0/1)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such file")
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows or rows[0][:3] != ["id", "patient", "split"]:
        raise ConfigError(f"{path}: expected the columns id, patient, split, in_<fraction>...")
    header, body = rows[0], rows[1:]
    fractions = []
    for name in header[3:]:
        try:
            if not name.startswith(COLUMN_PREFIX):
                raise ValueError
            fractions.append(float(name[len(COLUMN_PREFIX) :]))
        except ValueError:
            raise ConfigError(f"{path}: column {name!r} is not in_<fraction>") from None
    check_fractions(fractions)
    short = [str(i + 2) for i, row in enumerate(body) if len(row) != len(header)]
    if short:
        raise ConfigError(
            f"{path}: rows with a wrong number of fields (lines {first_items(short)})"
        )
    columns = list(zip(*body, strict=True)) if body else [()] * len(header)
    subsets = {}
    for f, values in zip(fractions, columns[3:], strict=True):
        bad = sorted(set(values) - {"0", "1"})
        if bad:
            raise ConfigError(
                f"{path}: column {fraction_column(f)} holds values other than 0/1: "
                f"{first_items([repr(b) for b in bad])}"
            )
        subsets[f] = np.asarray(values, dtype=str) == "1"
    return LabelSubsets(
        ids=list(columns[0]),
        patients=np.asarray(columns[1], dtype=str),
        splits=np.asarray(columns[2], dtype=str),
        subsets=subsets,
    )


def _order_key(seed: int, patient: str) -> bytes:
    # blake2b, not hash(): Python salts str hashes per process. Keyed with its own `person` so the
    # order is independent of data/splits.py's order for the same seed (which made the split).
    return hashlib.blake2b(
        f"{int(seed)}\0{patient}".encode(), digest_size=8, person=b"medfound-subset"
    ).digest()


def _checked_arrays(patients: np.ndarray, train_mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    patients = np.asarray(patients, dtype=str)
    mask = np.asarray(train_mask)
    if patients.ndim != 1 or mask.shape != patients.shape:
        raise ValueError(
            f"patients and train_mask must be 1D of the same length, got {patients.shape} and "
            f"{mask.shape}"
        )
    if mask.dtype != bool:
        raise ValueError(f"train_mask must be boolean, got {mask.dtype}")
    if not mask.any():
        raise ConfigError("the training split has no items: no label subsets can be drawn")
    return patients, mask
