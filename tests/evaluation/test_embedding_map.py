"""Embedding maps: standardisation and PCA against numpy and scikit-learn, UMAP and t-SNE keep
separable clusters apart and are seeded, the drawing has one point per item and a legend entry per
value (or a colour bar), in the colours it says, and a missing extra is named."""

import sys

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.model_selection import LeaveOneOut, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from medfound.errors import ConfigError, MissingDependencyError
from medfound.evaluation.embedding_map import MISSING, draw_map, project, standardise


def _clusters(n_per=20, dims=12, seed=0):
    """Three well-separated clusters with features of very different scales."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(3, dims)) * 6
    labels = np.repeat(np.arange(3), n_per)
    X = centres[labels] + rng.normal(size=(len(labels), dims))
    X *= np.geomspace(0.01, 100, dims)  # scales a projection must not be decided by
    return X.astype(np.float32), labels


def _numpy_standardised(X):
    X = np.asarray(X, dtype=np.float64)
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 0, std, 1.0)


def _png_colours(path):
    with Image.open(path) as image:
        assert image.format == "PNG"
        rgb = np.asarray(image.convert("RGB"))
    return {tuple(c) for c in np.unique(rgb.reshape(-1, 3), axis=0)}


def _rgb(colour):
    return tuple(round(v * 255) for v in colour[:3])


def _separation(coordinates, labels):
    """Leave-one-out accuracy of 3-NN in the map: near 1 when the clusters stay apart."""
    knn = KNeighborsClassifier(n_neighbors=3)
    return cross_val_score(knn, coordinates, labels, cv=LeaveOneOut()).mean()


def test_standardise_matches_numpy_and_keeps_constant_features_at_zero():
    X, _ = _clusters()
    X[:, 3] = 7.0
    Z = standardise(X)
    np.testing.assert_allclose(Z, _numpy_standardised(X), atol=1e-10)
    assert np.all(Z[:, 3] == 0)


def test_pca_equals_scikit_learn_on_standardised_data():
    X, labels = _clusters()
    result = project(X, "pca", seed=0)
    Z = _numpy_standardised(X)
    expected = PCA(n_components=2).fit_transform(Z)
    np.testing.assert_allclose(result.coordinates, expected, rtol=1e-6, atol=1e-8)
    # and, up to the sign of each axis, the first two principal components of a plain SVD
    u, s, _ = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
    by_svd = u[:, :2] * s[:2]
    signs = np.sign((by_svd * result.coordinates).sum(axis=0))
    np.testing.assert_allclose(result.coordinates, by_svd * signs, atol=1e-8)
    share = (s[:2] ** 2 / (s**2).sum()) * 100
    assert result.axis_labels[0].startswith(f"PC1 ({share[0]:.1f}%")
    assert result.axis_labels[1].startswith(f"PC2 ({share[1]:.1f}%")
    assert _separation(result.coordinates, labels) > 0.95


def test_tsne_separates_clusters_and_is_seeded():
    X, labels = _clusters()
    first = project(X, "tsne", seed=3)
    assert first.coordinates.shape == (len(X), 2) and np.isfinite(first.coordinates).all()
    assert _separation(first.coordinates, labels) > 0.95
    np.testing.assert_array_equal(project(X, "tsne", seed=3).coordinates, first.coordinates)
    assert not np.allclose(project(X, "tsne", seed=4).coordinates, first.coordinates)


@pytest.mark.slow  # numba compiles umap-learn's layout on the first call: about 10 s
def test_umap_separates_clusters_is_seeded_and_leaves_tensorflow_alone():
    X, labels = _clusters()
    tensorflow_before = "tensorflow" in sys.modules
    # few epochs keep it quick; the compilation, not the epochs, is what takes the time
    first = project(X, "umap", seed=3, umap_epochs=60)
    assert ("tensorflow" in sys.modules) == tensorflow_before
    assert first.coordinates.shape == (len(X), 2) and np.isfinite(first.coordinates).all()
    assert _separation(first.coordinates, labels) > 0.95
    again = project(X, "umap", seed=3, umap_epochs=60)
    np.testing.assert_allclose(again.coordinates, first.coordinates, rtol=1e-6)


def test_a_missing_extra_is_named(monkeypatch):
    X, _ = _clusters()
    monkeypatch.setitem(sys.modules, "openTSNE", None)  # `import openTSNE` now fails
    with pytest.raises(MissingDependencyError, match=r"pip install 'medfound\[maps\]'"):
        project(X, "tsne")


def test_unusable_inputs():
    X, _ = _clusters()
    with pytest.raises(ConfigError, match="pca, umap, tsne"):
        project(X, "mds")
    with pytest.raises(ConfigError, match="at least 5"):
        project(X[:4], "pca")
    with pytest.raises(ConfigError, match="2 or more"):
        project(X[:, :1], "pca")


def test_categorical_map_has_a_point_per_item_and_a_legend_entry_per_value(tmp_path):
    X, labels = _clusters()
    names = np.array(["mri", "ct", "cxr"])
    values = [str(v) for v in names[labels]]
    values[5] = None  # missing: grey, listed last
    coordinates = project(X, "pca").coordinates
    drawing = draw_map(
        tmp_path / "map.png", coordinates, values, column="modality", title="t",
        axis_labels=("a", "b"),
    )  # fmt: skip
    assert drawing.n_points == len(X)
    assert drawing.legend == ["ct", "cxr", "mri", MISSING]
    assert not drawing.colorbar
    colours = _png_colours(tmp_path / "map.png")
    assert len(colours) > 2
    tab10 = colormaps["tab10"]
    for k in range(3):  # each category's colour is painted (point centres are solid)
        assert _rgb(tab10(k)) in colours


def test_numeric_values_order_numerically_or_get_a_colour_bar(tmp_path):
    X, labels = _clusters()
    coordinates = project(X, "pca").coordinates
    few = [str(v) for v in np.array([2, 10, 1])[labels]]
    drawing = draw_map(tmp_path / "few.png", coordinates, few, column="grade", title="t")
    assert drawing.legend == ["1", "2", "10"] and not drawing.colorbar
    many = [f"{v:.3f}" for v in np.linspace(20, 80, len(X))]
    many[0] = None
    drawing = draw_map(tmp_path / "many.png", coordinates, many, column="age", title="t")
    assert drawing.colorbar and drawing.legend == [MISSING]
    assert drawing.n_points == len(X)
    colours = _png_colours(tmp_path / "many.png")
    assert _rgb(colormaps["viridis"](1.0)) in colours  # the largest value, at the scale's end
