"""`run_probe` end to end on generated embeddings and label CSVs: separable data learnt, metrics.json
complete and consistent with predictions.csv (AUC recomputed with scikit-learn), unmatched rows
reported, given splits kept, multilabel with unknown labels, and the user errors."""

import csv
import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import roc_auc_score

from medfound.errors import ConfigError
from medfound.tasks.probe import ProbeOptions, run_probe
from tests.factories import write_png

CLASSES = ("cyst", "normal", "tumour")


def _images(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.zeros((16, 16), np.uint8)
    return [write_png(folder / f"img{i:03d}.png", pixels).resolve() for i in range(n)]


def _write_parquet(path, paths, vectors, shape=False):
    columns = {
        "path": pa.array([str(p) for p in paths]),
        "source_id": pa.array([p.name for p in paths]),
        "embedding": pa.array([v.tolist() for v in vectors], pa.list_(pa.float32())),
        "model": pa.array(["timm:resnet18"] * len(paths)),
    }
    if shape:
        columns["shape"] = pa.array([[len(v)] for v in vectors], pa.list_(pa.int32()))
    pq.write_table(pa.table(columns), path)
    return path


def _write_csv(path, header, rows):
    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def multiclass_data(tmp_path):
    """120 labelled images of 60 patients in three separable clusters; 3 labelled images without
    an embedding, 2 embeddings without a label, 1 embedding with a NaN."""
    rng = np.random.default_rng(0)
    paths = _images(tmp_path / "images", 126)
    targets = rng.integers(0, 3, 126)
    centres = np.random.default_rng(1).normal(size=(3, 24)) * 3
    vectors = (centres[targets] + rng.normal(size=(126, 24))).astype(np.float32)
    vectors[121, 5] = np.nan
    embedded = [*range(120), 121, 123, 124, 125]  # 120 and 122: labelled, not embedded
    emb = _write_parquet(tmp_path / "emb.parquet", [paths[i] for i in embedded], vectors[embedded])
    # 0-122 labelled (one absolute path); 123-125 embedded, not labelled
    rows = [
        (f"images/{paths[i].name}", CLASSES[targets[i]], f"patient{i // 2}") for i in range(122)
    ] + [(str(paths[122]), CLASSES[targets[122]], "patient61")]
    labels = _write_csv(tmp_path / "labels.csv", ["path", "finding", "patient"], rows)
    return emb, labels, paths, targets


def test_multiclass_probe_end_to_end(tmp_path, multiclass_data, caplog):
    emb, labels, paths, targets = multiclass_data
    out = tmp_path / "run"
    options = ProbeOptions(n_bootstrap=200, seed=0)
    with caplog.at_level(logging.WARNING, logger="medfound"):
        result = run_probe(emb, labels, out, options)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "config.json", "splits.csv", "predictions.csv", "roc.png", "roc_knn.png"]
    )
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics == result.metrics
    assert metrics["kind"] == "multiclass" and metrics["classes"] == list(CLASSES)
    assert metrics["headline"] == "macro_auc"

    # unmatched: 121 has a NaN embedding (counted as invalid only), 120 and 122 have none;
    # 123-125 have no label
    unmatched = metrics["unmatched"]
    assert unmatched["labels_without_embedding"]["count"] == 2
    assert set(unmatched["labels_without_embedding"]["first"]) == {
        str(paths[i]) for i in (120, 122)
    }
    assert unmatched["embeddings_without_label"]["first"] == [
        str(paths[i]) for i in (123, 124, 125)
    ]
    assert unmatched["invalid_embeddings"]["first"] == [str(paths[121])]
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "2 label row(s)" in warned and "3 embedding(s)" in warned and "NaN" in warned

    counts = metrics["counts"]
    assert counts["used"] == 120 and counts["label_rows"] == 123 and counts["patients"] == 60
    assert sum(counts["per_split"][s]["items"] for s in ("train", "val", "test")) == 120

    # splits by patient, written; predictions carry them and every item once
    splits = _read_csv(out / "splits.csv")
    split_of = {row["id"]: row["split"] for row in splits}
    assert len(split_of) == 120
    patient_splits = {}
    for row in splits:
        patient_splits.setdefault(row["patient"], set()).add(row["split"])
    assert all(len(s) == 1 for s in patient_splits.values())
    predictions = _read_csv(out / "predictions.csv")
    assert [row["split"] for row in predictions] == [split_of[row["id"]] for row in predictions]

    # the reported figures are those of the written test predictions
    test = [row for row in predictions if row["split"] == "test"]
    assert len(test) == counts["per_split"]["test"]["items"] > 0
    truth = np.array([targets[paths.index(Path(r["id"]))] for r in test])
    for name in ("logistic", "knn"):
        scores = np.array([[float(r[f"{name}:{c}"]) for c in CLASSES] for r in test])
        reported = metrics["classifiers"][name]["metrics"]
        for k, c in enumerate(CLASSES):
            figure = reported["per_class"][c]["auc"]
            expected = roc_auc_score(truth == k, scores[:, k])
            assert figure["value"] == pytest.approx(expected, abs=1e-4)
            assert figure["low"] <= figure["value"] <= figure["high"]
            assert figure["n_resamples"] == 200 and figure["n_resamples_used"] > 150
        assert reported["macro_auc"]["value"] > 0.95
        assert reported["accuracy"]["value"] > 0.8
    logistic = metrics["classifiers"]["logistic"]
    assert set(logistic["chosen_C"]) == set(CLASSES) and logistic["chosen_C"]["cyst"] > 0
    assert metrics["classifiers"]["knn"]["k"] == {c: 20 for c in CLASSES}
    config = json.loads((out / "config.json").read_text())
    assert config["n_bootstrap"] == 200 and config["classifier"] == "both"


def test_multilabel_with_given_splits_and_chosen_columns(tmp_path):
    rng = np.random.default_rng(2)
    n = 90
    paths = _images(tmp_path / "imgs", n)
    X = rng.normal(size=(n, 10)).astype(np.float32)
    a = (X[:, 0] > 0).astype(int)
    X[:, 0] += np.where(a == 1, 1.0, -1.0)  # a margin between the classes of a
    b = (X[:, 1] > 0.3).astype(int)
    split = np.array(["train"] * 60 + ["val"] * 10 + ["test"] * 20)
    rows = []
    for i in range(n):
        b_cell = "" if rng.random() < 0.25 else str(b[i])  # unknown
        rows.append((str(paths[i]), str(a[i]), b_cell, "1", f"p{i}", split[i]))
    labels = _write_csv(
        tmp_path / "labels.csv", ["path", "a", "b", "ignored", "patient", "split"], rows
    )
    emb = _write_parquet(tmp_path / "emb.parquet", paths, X)
    options = ProbeOptions(label_columns=["a", "b"], classifier="logistic", n_bootstrap=100)
    result = run_probe(emb, labels, tmp_path / "run", options)
    metrics = result.metrics
    assert metrics["kind"] == "multilabel" and metrics["classes"] == ["a", "b"]
    assert list(metrics["classifiers"]) == ["logistic"]
    assert not (tmp_path / "run" / "roc_knn.png").exists()
    written = {r["id"]: r["split"] for r in _read_csv(tmp_path / "run" / "splits.csv")}
    assert [written[str(p)] for p in paths] == split.tolist()  # the CSV's splits, as given
    per_split = metrics["counts"]["per_split"]
    assert [per_split[s]["items"] for s in ("train", "val", "test")] == [60, 10, 20]
    known_b = sum(1 for r in rows[70:] if r[2] != "")
    reported = metrics["classifiers"]["logistic"]["metrics"]
    b_counts = reported["per_class"]["b"]
    assert b_counts["n_pos"] + b_counts["n_neg"] == known_b  # unknown labels masked out
    assert reported["per_class"]["a"]["auc"]["value"] > 0.95
    assert "accuracy" not in reported


def test_user_errors(tmp_path, multiclass_data):
    emb, labels, paths, _ = multiclass_data
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "old.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        run_probe(emb, labels, tmp_path / "full")
    other = _write_parquet(tmp_path / "other.parquet", [tmp_path / "x.png"], np.ones((1, 3)))
    with pytest.raises(ConfigError, match=r"no label row .* has an embedding"):
        run_probe(other, labels, tmp_path / "run1")
    maps = _write_parquet(tmp_path / "maps.parquet", paths[:3], np.ones((3, 4)), shape=True)
    with pytest.raises(ConfigError, match="--pool avg"):
        run_probe(maps, labels, tmp_path / "run2")
    no_test = _write_csv(
        tmp_path / "no_test.csv",
        ["path", "finding", "split"],
        [(str(p), CLASSES[i % 3], "train") for i, p in enumerate(paths[:30])],
    )
    with pytest.raises(ConfigError, match="no test items"):
        run_probe(emb, no_test, tmp_path / "run3")
    with pytest.raises(ConfigError, match="--classifier"):
        run_probe(emb, labels, tmp_path / "run4", ProbeOptions(classifier="svm"))
    assert not any((tmp_path / f"run{i}").exists() for i in range(1, 5))  # nothing written


def test_unusable_embedding_files(tmp_path):
    from medfound.tasks.probe import read_embeddings

    paths = _images(tmp_path / "i", 3)
    ragged = tmp_path / "ragged.parquet"
    pq.write_table(
        pa.table(
            {
                "path": [str(p) for p in paths],
                "embedding": pa.array([[1.0, 2.0], [1.0], [3.0, 4.0]], pa.list_(pa.float32())),
            }
        ),
        ragged,
    )
    with pytest.raises(ConfigError, match=r"different lengths .*img001\.png \(1\)"):
        read_embeddings(ragged)
    twice = _write_parquet(tmp_path / "twice.parquet", [paths[0], paths[0]], np.ones((2, 2)))
    with pytest.raises(ConfigError, match="listed twice"):
        read_embeddings(twice)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ConfigError, match="not a readable Parquet"):
        read_embeddings(tmp_path / "junk.parquet")
    no_column = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"path": ["a"]}), no_column)
    with pytest.raises(ConfigError, match="no column embedding"):
        read_embeddings(no_column)
