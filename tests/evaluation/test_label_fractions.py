"""Label subsets: nested, whole patients, only training patients, counted exactly, seeded and
independent of item order; subsets.csv round trip; per-class counts against a hand count."""

import math

import numpy as np
import pytest

from medfound.data.splits import assign_splits
from medfound.errors import ConfigError
from medfound.evaluation.label_fractions import (
    check_fractions,
    fraction_column,
    nested_subsets,
    patients_per_fraction,
    read_subsets,
    subset_label_counts,
    subset_sizes,
    training_patient_order,
    write_subsets,
)

FRACTIONS = (0.01, 0.05, 0.1, 0.25, 1.0)


def _items(n_patients=300, seed=0):
    """Items of uneven, interleaved patients with patient-level splits."""
    rng = np.random.default_rng(seed)
    patients = np.array([f"p{i:03d}" for i in rng.integers(0, n_patients, 4 * n_patients)])
    splits = assign_splits(patients, (0.6, 0.2, 0.2), seed=seed)
    return patients, splits


def _patients_of(patients, mask):
    return set(patients[mask].tolist())


def test_nested_per_patient_and_never_outside_train():
    patients, splits = _items()
    train = splits == "train"
    subsets = nested_subsets(patients, train, FRACTIONS, seed=3)
    assert list(subsets) == sorted(FRACTIONS)
    held_out = _patients_of(patients, ~train)
    previous = np.zeros(len(patients), dtype=bool)
    for mask in subsets.values():
        assert mask.dtype == bool and mask.shape == patients.shape
        assert not (mask & ~train).any()  # no val/test item ...
        assert not _patients_of(patients, mask) & held_out  # ... nor any held-out patient
        assert (mask >= previous).all()  # nested: the smaller subset is inside this one
        for patient in _patients_of(patients, mask):  # a patient's training items all in
            assert mask[patients == patient].all()
        previous = mask
    assert (subsets[1.0] == train).all()


def test_patients_counted_exactly():
    patients, splits = _items()
    train = splits == "train"
    n_train = len(_patients_of(patients, train))
    subsets = nested_subsets(patients, train, FRACTIONS, seed=0)
    for f, mask in subsets.items():
        # independent count: ceil of the exact product (fractions are decimal, so via integers)
        wanted = max(1, math.ceil(round(f * 100) * n_train / 100))
        assert len(_patients_of(patients, mask)) == wanted, f
    sizes = subset_sizes(patients, subsets)
    assert sizes[1.0] == {"items": int(train.sum()), "patients": n_train}


def test_ceil_is_not_fooled_by_floating_point():
    # 0.07 * 100 == 7.000000000000001 and 0.29 * 100 == 28.999999999999996 in floating point
    assert patients_per_fraction(100, [0.07, 0.29, 0.001, 1.0]) == {
        0.001: 1,
        0.07: 7,
        0.29: 29,
        1.0: 100,
    }


def test_seeded_and_independent_of_item_order():
    patients, splits = _items()
    train = splits == "train"
    a = nested_subsets(patients, train, FRACTIONS, seed=7)
    b = nested_subsets(patients, train, FRACTIONS, seed=7)
    assert all((a[f] == b[f]).all() for f in FRACTIONS)
    other = nested_subsets(patients, train, FRACTIONS, seed=8)
    assert _patients_of(patients, a[0.1]) != _patients_of(patients, other[0.1])
    order = np.random.default_rng(1).permutation(len(patients))
    shuffled = nested_subsets(patients[order], train[order], FRACTIONS, seed=7)
    for f in FRACTIONS:
        assert _patients_of(patients, a[f]) == _patients_of(patients[order], shuffled[f])


def test_order_is_independent_of_the_split_order():
    # With one hash for both, the first 100 of the 500 training patients would be exactly the
    # training split of assign_splits with a 10% train share and the same seed (both take the
    # smallest hashes); with independent orders about 100 * 100 / 500 = 20 of them are.
    patients = np.array([f"p{i}" for i in range(1000)])
    train = assign_splits(patients, (0.5, 0.25, 0.25), seed=0) == "train"
    order = training_patient_order(patients, train, seed=0)
    assert len(order) == 500 and set(order) == set(patients[train].tolist())
    small_train = set(patients[assign_splits(patients, (0.1, 0.45, 0.45), seed=0) == "train"])
    assert len(set(order[:100]) & small_train) < 40
    # another seed gives another order: about half of the first 250 in common
    other = training_patient_order(patients, train, seed=1)
    assert 0.35 < len(set(order[:250]) & set(other[:250])) / 250 < 0.65


def test_patient_on_both_sides_of_the_mask_is_refused():
    patients = np.array(["a", "a", "b", "c"])
    train = np.array([True, False, True, False])
    with pytest.raises(ConfigError, match="a"):
        nested_subsets(patients, train, [0.5], seed=0)


@pytest.mark.parametrize("fractions", [[0.0], [1.5], [-0.1], [float("nan")], ["x"], []], ids=str)
def test_bad_fractions_refused(fractions):
    with pytest.raises(ConfigError, match="fraction"):
        check_fractions(fractions)


def test_fractions_sorted_and_deduplicated():
    assert check_fractions([1, 0.1, 0.01, 0.1]) == (0.01, 0.1, 1.0)


def test_empty_training_split_refused():
    with pytest.raises(ConfigError, match="training"):
        nested_subsets(np.array(["a", "b"]), np.array([False, False]), [0.5], seed=0)


def test_subsets_csv_round_trip(tmp_path):
    patients, splits = _items(40)
    ids = [f"/data/img{i}.png" for i in range(len(patients))]
    subsets = nested_subsets(patients, splits == "train", [0.25, 0.05, 1.0], seed=2)
    path = tmp_path / "subsets.csv"
    write_subsets(path, ids, patients, splits, subsets)
    header = path.read_text().splitlines()[0]
    assert header == "id,patient,split,in_0.05,in_0.25,in_1.0"
    back = read_subsets(path)
    assert back.ids == ids
    assert (back.patients == patients).all() and (back.splits == splits).all()
    assert back.fractions == (0.05, 0.25, 1.0)
    for f in back.fractions:
        assert (back.subsets[f] == subsets[f]).all()
    assert not list(tmp_path.glob(".*partial"))  # atomic write left no temporary


def test_subsets_csv_errors_name_the_file(tmp_path):
    path = tmp_path / "subsets.csv"
    path.write_text("id,patient,split,in_0.1\na,p,train,2\n")
    with pytest.raises(ConfigError, match=r"subsets\.csv.*in_0\.1.*'2'"):
        read_subsets(path)
    path.write_text("id,patient,split,frac\na,p,train,1\n")
    with pytest.raises(ConfigError, match="'frac'"):
        read_subsets(path)
    assert fraction_column(0.1) == "in_0.1"


def test_label_counts_match_a_hand_count():
    targets = np.array([0, 1, 2, 1, 1, 0])
    mask = np.array([True, True, False, True, False, True])
    counts = subset_label_counts(targets, "multiclass", mask, classes=["a", "b", "c"])
    # items kept: 0, 1, 1, 0 -> a: 2 of 4, b: 2 of 4, c: none (its AUC would be undefined)
    assert counts == {
        "a": {"n_pos": 2, "n_neg": 2},
        "b": {"n_pos": 2, "n_neg": 2},
        "c": {"n_pos": 0, "n_neg": 4},
    }
    nan = np.nan
    multilabel = np.array([[1, 0], [nan, 1], [0, 1], [1, nan]], dtype=np.float32)
    counts = subset_label_counts(multilabel, "multilabel", np.array([1, 1, 1, 0], dtype=bool))
    assert counts == {"0": {"n_pos": 1, "n_neg": 1}, "1": {"n_pos": 2, "n_neg": 1}}
