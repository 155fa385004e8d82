"""Patient-level splits: never a patient in two splits, seeded, order-free, small data covered."""

import csv
from collections import defaultdict

import numpy as np
import pytest

from medfound.data.splits import assign_splits, write_splits
from medfound.errors import ConfigError


def _patients(n_items: int, n_patients: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.array([f"pat{rng.integers(0, n_patients):03d}" for _ in range(n_items)])


def _splits_of_patients(patients, splits) -> dict[str, set[str]]:
    seen = defaultdict(set)
    for p, s in zip(patients.tolist(), splits.tolist(), strict=True):
        seen[p].add(s)
    return seen


@pytest.mark.parametrize("seed", range(8))
def test_no_patient_is_in_two_splits(seed):
    patients = _patients(300, 60, seed)
    splits = assign_splits(patients, seed=seed)
    assert set(splits.tolist()) <= {"train", "val", "test"}
    seen = _splits_of_patients(patients, splits)
    assert all(len(found) == 1 for found in seen.values())
    # the shares are of patients: 70 / 15 / 15 % of the patients present, rounded
    per_split = {s: sum(found == {s} for found in seen.values()) for s in ("train", "val", "test")}
    n = len(seen)
    for name, share in zip(("train", "val", "test"), (0.7, 0.15, 0.15), strict=True):
        assert abs(per_split[name] - share * n) <= 1
    assert sum(per_split.values()) == n


def test_seeded_deterministic_and_free_of_item_order():
    patients = _patients(200, 40, 1)
    first = assign_splits(patients, seed=3)
    np.testing.assert_array_equal(assign_splits(patients, seed=3), first)
    order = np.random.default_rng(0).permutation(len(patients))
    np.testing.assert_array_equal(assign_splits(patients[order], seed=3), first[order])
    others = [assign_splits(patients, seed=s) for s in (4, 5, 6)]
    assert any((o != first).any() for o in others)


def test_exact_counts_by_largest_remainder():
    patients = np.array([f"p{i}" for i in range(10)])
    splits = assign_splits(patients, fractions=(0.6, 0.25, 0.15), seed=0)
    # 6 / 2.5 / 1.5 -> floors 6, 2, 1 and the one patient left to the largest remainder (val, first)
    assert [int(np.sum(splits == s)) for s in ("train", "val", "test")] == [6, 3, 1]


@pytest.mark.parametrize(
    ("n", "fractions", "expected"),
    [
        (1, (0.7, 0.15, 0.15), [1, 0, 0]),
        (2, (0.7, 0.15, 0.15), [2, 0, 0]),
        (3, (0.7, 0.15, 0.15), [1, 1, 1]),
        (4, (0.9, 0.05, 0.05), [2, 1, 1]),
        (2, (0.9, 0.1, 0.0), [1, 1, 0]),
        (5, (1.0, 0.0, 0.0), [5, 0, 0]),
        # a small train share rounds to no patient: train still gets one
        (1, (0.2, 0.4, 0.4), [1, 0, 0]),
        (2, (0.1, 0.45, 0.45), [1, 1, 0]),
        (1, (0.01, 0.99, 0.0), [1, 0, 0]),
        (3, (0.05, 0.05, 0.9), [1, 1, 1]),
    ],
)
def test_small_data_gets_a_patient_in_each_split_asked_for(n, fractions, expected):
    patients = np.repeat([f"p{i}" for i in range(n)], 2)  # two images each
    splits = assign_splits(patients, fractions=fractions, seed=0)
    counts = [len(set(patients[splits == s].tolist())) for s in ("train", "val", "test")]
    assert counts == expected


@pytest.mark.parametrize("seed", range(3))
def test_split_counts_keep_their_promises_on_random_fractions(seed):
    rng = np.random.default_rng(seed)
    for _ in range(300):
        n = int(rng.integers(1, 9))
        fractions = rng.dirichlet([1.0, 1.0, 1.0])
        if rng.random() < 0.3:
            fractions[int(rng.integers(1, 3))] = 0.0
            fractions /= fractions.sum()
        patients = np.array([f"p{i}" for i in range(n)])
        splits = assign_splits(patients, fractions=tuple(fractions), seed=seed)
        counts = [int(np.sum(splits == s)) for s in ("train", "val", "test")]
        asked = [s for s in range(3) if fractions[s] > 0]
        assert counts[0] >= 1, (n, fractions, counts)
        assert all(counts[s] == 0 for s in range(3) if s not in asked)
        if n >= len(asked):
            assert all(counts[s] >= 1 for s in asked), (n, fractions, counts)


def test_given_splits_are_normalised_and_checked():
    patients = np.array(["a", "a", "b", "c"])
    given = np.array(["train", "Train", "valid", "test"])
    np.testing.assert_array_equal(
        assign_splits(patients, given=given), ["train", "train", "val", "test"]
    )
    with pytest.raises(
        ConfigError, match=r"1 patient\(s\) in more than one split: a \(train, test\)"
    ):
        assign_splits(patients, given=np.array(["train", "test", "val", "val"]))
    with pytest.raises(ConfigError, match="'dev', 'holdout'"):
        assign_splits(patients, given=np.array(["dev", "train", "holdout", "test"]))


@pytest.mark.parametrize(
    "fractions", [(0.5, 0.5), (0.7, 0.2, 0.2), (0.0, 0.5, 0.5), (1.2, -0.1, -0.1)]
)
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(ConfigError, match="split fractions"):
        assign_splits(np.array(["a", "b", "c"]), fractions=fractions)


def test_write_splits_round_trips(tmp_path):
    ids = ["/x/1.png", "/x/2.png", "/x/3,odd.png"]
    patients = ["p1", "p1", "p2"]
    splits = ["train", "train", "test"]
    path = tmp_path / "run" / "splits.csv"
    write_splits(path, ids, patients, splits)
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows == [["id", "patient", "split"], *map(list, zip(ids, patients, splits, strict=True))]
    assert [p.name for p in path.parent.iterdir()] == ["splits.csv"]  # no temporary left
    with pytest.raises(ValueError):
        write_splits(path, ids, patients, splits[:2])
