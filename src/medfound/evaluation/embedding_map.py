"""2D maps of embeddings: project them (PCA, UMAP or t-SNE) and draw one point per item, coloured by
a value of the item (its modality, preset, label ...).

Features are standardised (zero mean, unit variance per dimension) before any projection, so that a
few dimensions of large scale do not decide the map. PCA (scikit-learn) is the fast default; UMAP
(umap-learn) and t-SNE (openTSNE) come with the optional extra `maps` and are imported lazily.
Every projection is seeded. matplotlib is used through its object API (`Figure` with the Agg
canvas), so drawing never touches the process's pyplot state.
"""

import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medfound._optional import require
from medfound.errors import ConfigError
from medfound.files import atomic_write

METHODS = ("pca", "umap", "tsne")
METHOD_NAMES = {"pca": "PCA", "umap": "UMAP", "tsne": "t-SNE"}
MAPS_EXTRA = "maps"
MISSING = "(missing)"  # the category of items without a value
MIN_POINTS = 5  # fewer make no map (t-SNE's perplexity and UMAP's neighbours need a few)
# A numeric column with at least this many distinct values is drawn with a colour bar; fewer (or any
# non-numeric column) get a legend entry per value.
COLOURBAR_MIN_VALUES = 13
UMAP_NEIGHBOURS = 15  # umap-learn's default
TSNE_PERPLEXITY = 30.0  # openTSNE's default
# Below this many points umap-learn finds neighbours by brute force itself; we hand it the same
# exact neighbours from scikit-learn, which spares umap-learn's numba compilation of its own search
# (about 10 s on every call, since numba does not cache it).
_EXACT_NEIGHBOURS_BELOW = 4096


@dataclass
class Projection:
    """Two coordinates per item and the names of the two axes."""

    coordinates: np.ndarray  # float64 (N, 2)
    axis_labels: tuple[str, str]
    method: str


@dataclass
class Drawing:
    """What a map shows, read back from the matplotlib artists that drew it."""

    path: Path
    n_points: int  # points in the scatter
    legend: list[str]  # legend entries, in order
    colorbar: bool  # numeric values drawn on a colour scale


def standardise(vectors: np.ndarray) -> np.ndarray:
    """Each feature at zero mean and unit variance (float64); constant features stay at 0."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit_transform(np.asarray(vectors, dtype=np.float64))


def project(
    vectors: np.ndarray, method: str = "pca", seed: int = 0, *, umap_epochs: int | None = None
) -> Projection:
    """Standardise `vectors` (N, D) and project them to 2D with `method` (pca, umap or tsne),
    seeded. `umap_epochs` overrides umap-learn's number of optimisation epochs (None: its default,
    500 below 10,000 points and 200 above)."""
    if method not in METHODS:
        raise ConfigError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    vectors = np.asarray(vectors)
    if vectors.ndim != 2 or vectors.shape[1] < 2:
        raise ConfigError(f"a map needs vectors of 2 or more values, got shape {vectors.shape}")
    if len(vectors) < MIN_POINTS:
        raise ConfigError(f"a map needs at least {MIN_POINTS} items, got {len(vectors)}")
    X = standardise(vectors)
    if method == "pca":
        return _pca(X, seed)
    if method == "umap":
        return _umap(X, seed, umap_epochs)
    return _tsne(X, seed)


def _pca(X: np.ndarray, seed: int) -> Projection:
    from sklearn.decomposition import PCA

    pca = PCA(n_components=2, random_state=seed)
    coordinates = pca.fit_transform(X)
    share = pca.explained_variance_ratio_ * 100
    labels = (f"PC1 ({share[0]:.1f}% of variance)", f"PC2 ({share[1]:.1f}% of variance)")
    return Projection(coordinates, labels, "pca")


def _umap(X: np.ndarray, seed: int, epochs: int | None) -> Projection:
    umap = _import_umap()
    n_neighbours = min(UMAP_NEIGHBOURS, len(X) - 1)
    precomputed = None
    if len(X) < _EXACT_NEIGHBOURS_BELOW:
        from sklearn.neighbors import NearestNeighbors

        # Each point is its own first neighbour at distance 0, as umap-learn's search returns it.
        distances, indices = NearestNeighbors(n_neighbors=n_neighbours).fit(X).kneighbors(X)
        precomputed = (indices, distances, None)
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=n_neighbours,
        random_state=seed,  # also makes umap-learn run single-threaded, which it announces
        n_jobs=1,
        n_epochs=epochs,
        precomputed_knn=precomputed if precomputed is not None else (None, None, None),
    )
    with warnings.catch_warnings():
        # umap-learn warns that a seed disables parallelism (chosen here) and that precomputed
        # neighbours without a search index allow no `transform` (not used); nothing else is hidden.
        warnings.filterwarnings("ignore", message=".*overridden to 1 by setting random_state")
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]", category=UserWarning)
        coordinates = reducer.fit_transform(X)
    return Projection(np.asarray(coordinates, dtype=np.float64), ("UMAP 1", "UMAP 2"), "umap")


def _import_umap():
    """umap-learn, imported without TensorFlow.

    umap-learn's package import tries its ParametricUMAP, which imports TensorFlow when it is
    installed: seconds of import, and with TensorFlow and torch in one process a later import of
    torchvision segfaults (seen with tensorflow-cpu 2.21, torch 2.9). Plain UMAP never uses it, so
    TensorFlow is hidden from that one import (`import tensorflow` then raises ImportError, which
    umap-learn handles) and the entry is removed afterwards.
    """
    if "umap" in sys.modules or "tensorflow" in sys.modules:
        return require("umap", MAPS_EXTRA, "UMAP maps")
    sys.modules["tensorflow"] = None  # type: ignore[assignment]
    try:
        return require("umap", MAPS_EXTRA, "UMAP maps")
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


def _tsne(X: np.ndarray, seed: int) -> Projection:
    opentsne = require("openTSNE", MAPS_EXTRA, "t-SNE maps")
    # openTSNE needs perplexity < N / 3 (it would lower it itself, with a warning).
    perplexity = min(TSNE_PERPLEXITY, max(1.0, (len(X) - 1) / 3.0))
    embedding = opentsne.TSNE(
        n_components=2, perplexity=perplexity, random_state=seed, n_jobs=1, verbose=False
    ).fit(X)
    return Projection(np.asarray(embedding, dtype=np.float64), ("t-SNE 1", "t-SNE 2"), "tsne")


# --- drawing -----------------------------------------------------------------------------------


def numeric_values(values: Sequence[str | None]) -> np.ndarray | None:
    """The values as floats (NaN for missing ones) when every present value is a finite number,
    else None."""
    out = np.full(len(values), np.nan)
    for i, value in enumerate(values):
        if value is None:
            continue
        try:
            out[i] = float(value)
        except ValueError:
            return None
        if not math.isfinite(out[i]):
            return None
    return out if np.isfinite(out).any() else None


def categories(values: Sequence[str | None]) -> list[str]:
    """The distinct values in legend order: numerically when all are numbers, else alphabetically;
    MISSING last."""
    present = {v for v in values if v is not None}
    try:
        ordered = sorted(present, key=float)
    except ValueError:
        ordered = sorted(present)
    return ordered + ([MISSING] if any(v is None for v in values) else [])


def draw_map(
    path: str | Path,
    coordinates: np.ndarray,
    values: Sequence[str | None],
    *,
    column: str,
    title: str,
    axis_labels: tuple[str, str] = ("1", "2"),
) -> Drawing:
    """A PNG scatter of `coordinates` (N, 2), one point per item, coloured by `values` (None:
    missing, drawn in grey): a legend entry per distinct value, or a colour bar for a numeric column
    with many distinct values (COLOURBAR_MIN_VALUES). Points are drawn in a fixed shuffled order, so
    no value is hidden under another just because it comes later."""
    coordinates = np.asarray(coordinates, dtype=np.float64)
    if coordinates.shape != (len(values), 2):
        raise ValueError(f"coordinates {coordinates.shape} do not match {len(values)} values")
    from matplotlib.lines import Line2D

    figure = _figure()
    ax = figure.add_subplot()
    order = np.random.default_rng(0).permutation(len(values))
    size = float(np.clip(4000.0 / max(len(values), 1), 3.0, 30.0))
    numbers = numeric_values(values)
    use_bar = numbers is not None and len(np.unique(numbers[np.isfinite(numbers)])) >= (
        COLOURBAR_MIN_VALUES
    )
    handles: list = []
    if use_bar:
        present = np.isfinite(numbers[order])
        shown = order[present]
        scatter = ax.scatter(
            coordinates[shown, 0], coordinates[shown, 1], c=numbers[shown], cmap="viridis",
            s=size, linewidths=0,
        )  # fmt: skip
        figure.colorbar(scatter, ax=ax, label=column)
        if not present.all():
            missing = order[~present]
            ax.scatter(coordinates[missing, 0], coordinates[missing, 1], c="#b0b0b0", s=size)
            handles.append(_handle(Line2D, "#b0b0b0", MISSING))
    else:
        names = categories(values)
        colours = dict(zip(names, _palette(len(names)), strict=True))
        if MISSING in colours:
            colours[MISSING] = "#b0b0b0"
        drawn = [MISSING if values[i] is None else values[i] for i in order]
        ax.scatter(
            coordinates[order, 0], coordinates[order, 1], c=[colours[v] for v in drawn],
            s=size, linewidths=0,
        )  # fmt: skip
        handles = [_handle(Line2D, colours[name], name) for name in names]
    if handles:
        ax.legend(
            handles=handles, title=column, loc="upper left", bbox_to_anchor=(1.02, 1.0),
            fontsize=7, title_fontsize=8, frameon=False, ncol=max(1, math.ceil(len(handles) / 30)),
        )  # fmt: skip
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(title, fontsize=10)
    legend = ax.get_legend()
    drawing = Drawing(
        Path(path),
        n_points=sum(len(c.get_offsets()) for c in ax.collections),
        legend=[t.get_text() for t in legend.get_texts()] if legend is not None else [],
        colorbar=use_bar,
    )
    atomic_write(drawing.path, lambda tmp: figure.savefig(tmp, format="png"))
    return drawing


def _handle(line_class, colour, label: str):
    return line_class(
        [], [], marker="o", linestyle="", markerfacecolor=colour, markeredgewidth=0, label=label
    )


def _palette(n: int) -> list:
    """Qualitative colours for n categories: tab10, tab20, then evenly spaced turbo colours."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["turbo"](x) for x in np.linspace(0.05, 0.95, n)]


def _figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8.0, 6.0), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure
