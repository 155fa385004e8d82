"""`plot_embeddings` end to end on generated embedding Parquets: one point and one CSV row per item,
a legend entry per value, PCA coordinates as scikit-learn computes them, colours from a label CSV
joined on the resolved path (unmatched rows counted), seeded subsampling, t-SNE, the CLI, and the
user errors."""

import csv
import logging

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import typer
from PIL import Image
from sklearn.decomposition import PCA
from typer.testing import CliRunner

from medfound.cli.plot_embeddings import plot_embeddings_command
from medfound.errors import ConfigError
from medfound.tasks.plot_embeddings import plot_embeddings

MODALITIES = ("ct", "cxr", "mri")


def _write_parquet(path, paths, vectors, modalities):
    columns = {
        "path": pa.array([str(p) for p in paths]),
        "source_id": pa.array([p.name for p in paths]),
        "modality": pa.array(modalities),
        "preset": pa.array(["auto"] * len(paths)),
        "embedding": pa.array([v.tolist() for v in vectors], pa.list_(pa.float32())),
        "model": pa.array(["timm:resnet18"] * len(paths)),
    }
    pq.write_table(pa.table(columns), path)
    return path


def _read_csv(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _standardised(X):
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _colours(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        return len(np.unique(np.asarray(image.convert("RGB")).reshape(-1, 3), axis=0))


@pytest.fixture
def data(tmp_path):
    """30 embeddings of three modalities (image files need not exist: only paths are joined)."""
    rng = np.random.default_rng(0)
    folder = (tmp_path / "images").resolve()
    paths = [folder / f"img{i:02d}.png" for i in range(30)]
    kinds = rng.integers(0, 3, len(paths))
    vectors = (rng.normal(size=(3, 16)) * 4)[kinds] + rng.normal(size=(len(paths), 16))
    vectors *= np.geomspace(0.1, 10, 16)
    modalities = [MODALITIES[k] for k in kinds]
    emb = _write_parquet(tmp_path / "emb.parquet", paths, vectors.astype(np.float32), modalities)
    return emb, paths, vectors.astype(np.float32), modalities


def test_one_point_per_row_with_a_legend_entry_per_value(tmp_path, data):
    emb, paths, vectors, modalities = data
    result = plot_embeddings(emb, tmp_path / "out" / "map.png", color_by="modality", seed=0)
    rows = _read_csv(tmp_path / "out" / "map.csv")
    assert result.image == tmp_path / "out" / "map.png"
    assert result.coordinates_csv == tmp_path / "out" / "map.csv"
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    assert [r["value"] for r in rows] == modalities
    assert result.n_points == len(paths) and not result.subsampled
    assert result.legend == sorted(set(modalities))
    coordinates = np.array([[float(r["x"]), float(r["y"])] for r in rows])
    expected = PCA(n_components=2).fit_transform(_standardised(vectors))
    np.testing.assert_allclose(coordinates, expected, rtol=1e-6, atol=1e-8)
    assert _colours(result.image) > 2


def test_colours_from_a_label_csv_joined_on_the_resolved_path(tmp_path, data, caplog):
    emb, paths, _, _ = data
    grades = {p: str(i % 4) for i, p in enumerate(paths)}
    labels = tmp_path / "labels.csv"
    with open(labels, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "grade", "patient"])
        for i, p in enumerate(paths[:25]):  # 25-29: embeddings without a label row
            cell = "" if i == 3 else grades[p]  # blank: drawn as missing
            writer.writerow([f"images/{p.name}" if i % 2 else str(p), cell, f"p{i}"])
        writer.writerow(["images/elsewhere.png", "1", "p99"])  # a label row without an embedding
    with caplog.at_level(logging.WARNING, logger="medfound"):
        result = plot_embeddings(
            emb, tmp_path / "grade.png", color_by="grade", labels=labels, method="pca"
        )
    assert result.n_points == 25
    assert sorted(result.embeddings_without_label) == sorted(str(p) for p in paths[25:])
    assert result.labels_without_embedding == [str((tmp_path / "images/elsewhere.png").resolve())]
    assert "5 embedding(s)" in caplog.text and "1 row(s)" in caplog.text
    rows = _read_csv(tmp_path / "grade.csv")
    assert {r["path"]: r["value"] for r in rows} == {
        str(p): ("" if i == 3 else grades[p]) for i, p in enumerate(paths[:25])
    }
    assert result.legend == ["0", "1", "2", "3", "(missing)"]


def test_subsampling_is_seeded_and_said(tmp_path, data):
    emb, paths, vectors, _ = data
    first = plot_embeddings(emb, tmp_path / "a.png", color_by="modality", max_points=12, seed=1)
    again = plot_embeddings(emb, tmp_path / "b.png", color_by="modality", max_points=12, seed=1)
    other = plot_embeddings(emb, tmp_path / "c.png", color_by="modality", max_points=12, seed=2)
    assert first.subsampled and first.n_available == 30
    assert first.n_points == 12 and len(_read_csv(tmp_path / "a.csv")) == 12
    assert first.ids == again.ids and first.ids != other.ids
    # the projection is of the sample alone
    chosen = [[str(p) for p in paths].index(item) for item in first.ids]
    expected = PCA(n_components=2).fit_transform(_standardised(vectors[chosen]))
    np.testing.assert_allclose(first.coordinates, expected, rtol=1e-6, atol=1e-8)


def test_tsne_map_and_invalid_rows(tmp_path, data):
    emb, paths, vectors, modalities = data
    vectors = vectors.copy()
    vectors[4, 2] = np.nan
    emb = _write_parquet(tmp_path / "nan.parquet", paths, vectors, modalities)
    result = plot_embeddings(emb, tmp_path / "tsne.png", color_by="modality", method="tsne")
    assert result.invalid_embeddings == [str(paths[4])]
    assert result.n_points == 29 and len(_read_csv(tmp_path / "tsne.csv")) == 29
    assert result.legend == sorted(set(modalities))


def test_user_errors(tmp_path, data):
    emb, _, _, _ = data
    with pytest.raises(ConfigError, match=r"no column 'finding'.*'modality'.*'preset'") as info:
        plot_embeddings(emb, tmp_path / "m.png", color_by="finding")
    assert "'embedding'" not in str(info.value)  # not a colour
    labels = tmp_path / "labels.csv"
    labels.write_text("path,grade\nimages/img00.png,1\n")
    with pytest.raises(ConfigError, match=r"no column 'modality'.*'grade'"):
        plot_embeddings(emb, tmp_path / "m.png", color_by="modality", labels=labels)
    with pytest.raises(ConfigError, match="at least 5"):
        plot_embeddings(emb, tmp_path / "m.png", color_by="grade", labels=labels)
    with pytest.raises(ConfigError, match=r"\.png"):
        plot_embeddings(emb, tmp_path / "m.svg", color_by="modality")
    with pytest.raises(ConfigError, match="pca, umap, tsne"):
        plot_embeddings(emb, tmp_path / "m.png", color_by="modality", method="mds")
    twice = tmp_path / "twice.csv"
    twice.write_text(f"path,grade\nimages/img00.png,1\n{tmp_path / 'images/img00.png'},2\n")
    with pytest.raises(ConfigError, match="line 3"):
        plot_embeddings(emb, tmp_path / "m.png", color_by="grade", labels=twice)
    assert not list(tmp_path.glob("m.*"))


def test_command(tmp_path, data):
    emb, paths, _, _ = data
    app = typer.Typer(pretty_exceptions_enable=False)
    app.command("plot-embeddings")(plot_embeddings_command)

    @app.callback()
    def _root() -> None:
        """A group, so that the command is called by name as under `medfound`."""

    runner = CliRunner()
    result = runner.invoke(app, ["plot-embeddings", str(emb), "--color-by", "preset"])
    assert result.exit_code == 0, result.output
    assert f"{len(paths)} points" in result.stderr and "1 legend entries" in result.stderr
    assert (tmp_path / "emb_pca_preset.png").is_file()
    assert len(_read_csv(tmp_path / "emb_pca_preset.csv")) == len(paths)
    result = runner.invoke(app, ["plot-embeddings", str(emb), "--color-by", "nothing"])
    assert result.exit_code == 2
    assert "error:" in result.stderr and "'modality'" in result.stderr
