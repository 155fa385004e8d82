"""Label CSVs and class folders -> LabelTable; missing images and bad labels found before training."""

import logging
import pickle
from collections import Counter

import numpy as np
import pytest

from medfound.data.labels import (
    FileImages,
    LabelTable,
    check_images_exist,
    read_class_folders,
    read_label_csv,
)
from medfound.errors import ConfigError
from tests.data.label_fixtures import write_csv, write_gray


def _images(folder, n, seed=0):
    return [write_gray(folder / "img" / f"{i:02d}.png", seed=seed + i) for i in range(n)]


def test_multiclass_csv_sorted_classes_relative_paths_patients_and_splits(tmp_path, monkeypatch):
    paths = _images(tmp_path, 5)
    labels = ["pneumonia", "normal", "covid", "normal", "covid"]
    patients = ["p1", "p1", "p2", "p3", "p3"]
    splits = ["train", "TRAIN", "valid", "validation", "test"]
    csv_path = write_csv(
        tmp_path / "labels.csv",
        ["path", "label", "patient", "split"],
        [
            [f"img/{p.name}", lab, pat, s]
            for p, lab, pat, s in zip(paths, labels, patients, splits, strict=True)
        ],
    )
    monkeypatch.chdir(tmp_path / "img")  # relative paths are relative to the CSV, not the cwd
    table = read_label_csv(csv_path)
    assert table.kind == "multiclass"
    assert table.classes == ("covid", "normal", "pneumonia")
    assert table.targets.dtype == np.int64
    assert [table.classes[t] for t in table.targets] == labels
    assert table.ids == [str(p.resolve()) for p in paths]
    assert table.patients.tolist() == patients
    assert table.splits.tolist() == ["train", "train", "val", "val", "test"]
    check_images_exist(table)  # all there: no error
    image = table.images.read(2)
    assert image.array.shape == (1, 16, 16)


def test_numeric_class_names_sort_as_numbers(tmp_path):
    paths = _images(tmp_path, 4)
    values = ["10", "2", "1", "2"]
    csv_path = write_csv(
        tmp_path / "l.csv",
        ["path", "grade"],
        [[str(p), v] for p, v in zip(paths, values, strict=True)],
    )
    table = read_label_csv(csv_path)
    assert table.classes == ("1", "2", "10")
    assert table.targets.tolist() == [2, 1, 0, 1]
    # no patient column: each item is its own patient; no split column: splits None
    assert table.patients.tolist() == table.ids
    assert table.splits is None


def test_given_classes_fix_the_order_and_refuse_other_values_by_line(tmp_path):
    paths = _images(tmp_path, 4)
    values = ["benign", "malignant", "maligant", "benign"]
    csv_path = write_csv(
        tmp_path / "l.csv",
        ["path", "label"],
        [[str(p), v] for p, v in zip(paths, values, strict=True)],
    )
    with pytest.raises(
        ConfigError, match=r"1 row\(s\).*outside the classes.*line 4 \('maligant'\)"
    ):
        read_label_csv(csv_path, classes=["malignant", "benign"])
    good = write_csv(tmp_path / "g.csv", ["path", "label"], [[str(p), "benign"] for p in paths[:2]])
    table = read_label_csv(good, classes=["malignant", "benign"])
    assert table.classes == ("malignant", "benign")
    assert table.targets.tolist() == [1, 1]
    assert table.describe()["per_class"] == {"malignant": 0, "benign": 2}


def test_multilabel_csv_blank_is_unknown(tmp_path):
    paths = _images(tmp_path, 3)
    cells = [["1", "0", ""], ["0.0", "1.0", "1"], ["", "", "0"]]
    csv_path = write_csv(
        tmp_path / "ml.csv",
        ["path", "effusion", "edema", "mass"],
        [[str(p), *c] for p, c in zip(paths, cells, strict=True)],
    )
    table = read_label_csv(csv_path)
    expected = np.array(
        [[float(c) if c else np.nan for c in row] for row in cells], dtype=np.float32
    )
    assert table.kind == "multilabel"
    assert table.classes == ("effusion", "edema", "mass")
    np.testing.assert_array_equal(table.targets, expected)  # NaN == NaN here
    described = table.describe()["per_class"]
    for k, name in enumerate(table.classes):
        column = [row[k] for row in cells]
        assert described[name] == {
            "positive": sum(float(c) == 1 for c in column if c),
            "negative": sum(float(c) == 0 for c in column if c),
            "unknown": column.count(""),
        }
    # one column made multilabel: a single sigmoid target
    single = read_label_csv(csv_path, ["mass"], kind="multilabel")
    np.testing.assert_array_equal(single.targets, expected[:, 2:])


def test_multilabel_cells_other_than_0_1_blank_are_listed(tmp_path):
    paths = _images(tmp_path, 3)
    csv_path = write_csv(
        tmp_path / "ml.csv",
        ["path", "a", "b"],
        [[str(paths[0]), "1", "0"], [str(paths[1]), "2", "yes"], [str(paths[2]), "-1", "0"]],
    )
    with pytest.raises(
        ConfigError, match=r"3 row\(s\).*line 3 \(a='2'\), line 3 \(b='yes'\), line 4"
    ):
        read_label_csv(csv_path)


@pytest.mark.parametrize(
    ("header", "row", "kwargs", "message"),
    [
        (["file", "label"], ["x.png", "a"], {}, "no column 'path'"),
        (["path", "label"], ["x.png", "a"], {"label_columns": ["grade"]}, "no column 'grade'"),
        (["path", "patient"], ["x.png", "p"], {}, "no label column"),
        (["path", "label", "split"], ["x.png", "a", "holdout"], {}, "line 2 \\('holdout'\\)"),
        (["path", "label", "patient"], ["x.png", "a", ""], {}, "with no 'patient'"),
        (["path", "label"], ["", "a"], {}, "with no 'path'"),
        (["path", "a", "b"], ["x.png", "1", "0"], {"kind": "multiclass"}, "from one column"),
        (["path", "a", "b"], ["x.png", "1", "0"], {"classes": ["a"]}, "not classes"),
    ],
)
def test_bad_csvs_are_refused_with_what_and_where(tmp_path, header, row, kwargs, message):
    csv_path = write_csv(tmp_path / "bad.csv", header, [row])
    with pytest.raises(ConfigError, match=message):
        read_label_csv(csv_path, **kwargs)


def test_an_image_listed_twice_is_refused(tmp_path):
    paths = _images(tmp_path, 2)
    csv_path = write_csv(
        tmp_path / "l.csv",
        ["path", "label"],
        [[str(paths[0]), "a"], [f"img/{paths[1].name}", "b"], [f"img/../img/{paths[0].name}", "b"]],
    )
    with pytest.raises(ConfigError, match=r"line 4 \(00.png, first on line 2\)"):
        read_label_csv(csv_path)


def test_gzipped_csv_with_bom_reads_the_same(tmp_path):
    paths = _images(tmp_path, 2)
    rows = [[str(p), lab] for p, lab in zip(paths, ["x", "y"], strict=True)]
    plain = read_label_csv(write_csv(tmp_path / "l.csv", ["path", "label"], rows))
    zipped = read_label_csv(
        write_csv(tmp_path / "l.csv.gz", ["\ufeffpath", "label"], rows, gz=True)
    )
    assert zipped.ids == plain.ids
    assert zipped.targets.tolist() == plain.targets.tolist()


def test_missing_images_are_counted_and_named(tmp_path):
    paths = _images(tmp_path, 3)
    paths[1].unlink()
    rows = [[str(p), "a"] for p in paths] + [["gone/never.png", "b"]]
    table = read_label_csv(write_csv(tmp_path / "l.csv", ["path", "label"], rows))
    with pytest.raises(ConfigError, match="2 of 4 images are missing") as err:
        check_images_exist(table)
    assert str(paths[1]) in str(err.value)
    assert str(tmp_path / "gone" / "never.png") in str(err.value)
    assert str(paths[0]) not in str(err.value)


def test_class_folders_recursive_sorted_hidden_skipped(tmp_path, caplog):
    layout = {"tumour": ["a.png", "deep/b.png", "deep/c.jpg"], "normal": ["d.png"], "empty": []}
    for cls, names in layout.items():
        (tmp_path / cls).mkdir()
        for i, name in enumerate(names):
            write_gray(tmp_path / cls / name, seed=i)
    (tmp_path / "normal" / "notes.txt").write_text("not an image")
    write_gray(tmp_path / "normal" / ".hidden" / "e.png", seed=9)
    write_gray(tmp_path / "loose.png", seed=10)
    (tmp_path / ".cache").mkdir()
    with caplog.at_level(logging.WARNING, logger="medfound"):
        table = read_class_folders(tmp_path)
    assert table.classes == ("empty", "normal", "tumour")
    found = Counter(table.classes[t] for t in table.targets)
    assert found == {"tumour": 3, "normal": 1}
    expected_ids = sorted(
        str((tmp_path / cls / name).resolve()) for cls, names in layout.items() for name in names
    )
    assert sorted(table.ids) == expected_ids
    assert table.patients.tolist() == table.ids
    assert "loose.png" in caplog.text
    assert "'empty' holds no images" in caplog.text


def test_class_folders_need_folders(tmp_path):
    write_gray(tmp_path / "x.png", seed=0)
    with pytest.raises(ConfigError, match="no class folders"):
        read_class_folders(tmp_path)
    with pytest.raises(ConfigError, match="no such folder"):
        read_class_folders(tmp_path / "absent")


def test_subset_keeps_rows_aligned_and_pickles(tmp_path):
    paths = _images(tmp_path, 5)
    rows = [[str(p), "abcab"[i], f"p{i % 2}", "train"] for i, p in enumerate(paths)]
    table = read_label_csv(write_csv(tmp_path / "l.csv", ["path", "y", "patient", "split"], rows))
    sub = table.subset([4, 0, 2])
    assert sub.ids == [table.ids[i] for i in (4, 0, 2)]
    assert sub.targets.tolist() == [table.targets[i] for i in (4, 0, 2)]
    assert sub.patients.tolist() == ["p0", "p0", "p0"]
    assert sub.classes == table.classes
    assert isinstance(sub.images, FileImages)
    again = pickle.loads(pickle.dumps(sub))
    np.testing.assert_array_equal(again.images.read(0).array, table.images.read(4).array)


def test_label_table_checks_its_own_shapes(tmp_path):
    images = FileImages([tmp_path / "a.png", tmp_path / "b.png"])
    with pytest.raises(ValueError, match=r"lie in \[0, 2\)"):
        LabelTable(images, np.array([0, 2]), "multiclass", ("a", "b"), np.array(["p", "q"]))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        LabelTable(images, np.array([[0.5], [1]]), "multilabel", ("a",), np.array(["p", "q"]))
    with pytest.raises(ValueError, match="splits"):
        LabelTable(
            images, np.array([0, 1]), "multiclass", ("a", "b"), np.array(["p", "q"]),
            np.array(["train", "dev"]),
        )  # fmt: skip
