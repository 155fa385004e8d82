"""Figures of a run: ROC curves of a classifier, predicted masks over their images.

matplotlib is imported inside the functions and used through its object API (`Figure` with the Agg
canvas), so neither importing medfound nor drawing changes the process's pyplot backend.
"""

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from medfound.evaluation.classification import Kind, check_inputs, class_columns
from medfound.files import atomic_write

# Tints of predicted classes 1, 2, ... (class 0, the background, is not drawn); truth contours use
# the same colour per class.
_CLASS_COLOURS = ("#e41a1c", "#377eb8", "#4daf4a", "#984ea3", "#ff7f00", "#ffff33", "#a65628")


def save_roc_curves(
    path: str | Path,
    targets: np.ndarray,
    scores: np.ndarray,
    kind: Kind,
    classes: Sequence[str],
    title: str = "ROC curves",
) -> Path:
    """A PNG of the ROC curve of every class with both label values present (one-vs-rest for
    multiclass, NaN targets left out for multilabel), each labelled with its AUC, and the macro AUC
    in the legend's title; classes without a curve are listed as undefined."""
    from sklearn.metrics import roc_auc_score, roc_curve

    targets, scores = check_inputs(targets, scores, kind, classes)
    figure = _figure(figsize=(5.5, 5.0))
    ax = figure.add_subplot()
    aucs, undefined = [], []
    for k, (known, y) in enumerate(class_columns(targets, kind, len(classes))):
        if not len(y) or y.min() == y.max():  # one label value, or none known
            undefined.append(classes[k])
            continue
        fpr, tpr, _ = roc_curve(y, scores[known, k])
        auc = roc_auc_score(y, scores[known, k])
        aucs.append(auc)
        ax.plot(fpr, tpr, lw=1.5, label=f"{classes[k]} (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    macro = f"macro AUC {np.mean(aucs):.3f}" if aucs else "macro AUC undefined"
    if undefined:
        macro += f"\nundefined: {', '.join(undefined)}"
    ax.legend(title=macro, fontsize=7, title_fontsize=8, loc="lower right")
    return _save(figure, path)


def save_mask_overlays(
    path: str | Path,
    images: Sequence[np.ndarray],
    truths: Sequence[np.ndarray | None],
    predictions: Sequence[np.ndarray],
    titles: Sequence[str] | None = None,
    max_cases: int = 6,
) -> Path:
    """A PNG montage, one row per case (at most `max_cases`): the image in gray, then the image with
    the prediction tinted and the truth's outline drawn in the same class colour.

    Images are (H, W), (C, H, W) (the first channel is shown) or 3D (C, X, Y, Z) / (X, Y, Z) with
    label maps (X, Y, Z): the axial slice (last axis) with the most truth foreground, else the most
    predicted foreground, is shown. Intensities are shown as given, scaled to their range.
    """
    n = min(len(images), max_cases)
    if not n:
        raise ValueError("no cases to draw")
    figure = _figure(figsize=(6.0, 3.0 * n))
    from matplotlib.colors import ListedColormap

    for row in range(n):
        truth = None if truths[row] is None else np.asarray(truths[row])
        prediction = np.asarray(predictions[row])
        image = _gray(np.asarray(images[row], dtype=np.float64), prediction.ndim)
        image, truth, prediction = _slice(image, truth, prediction)
        plain, overlay = (
            figure.add_subplot(n, 2, 2 * row + 1),
            figure.add_subplot(n, 2, 2 * row + 2),
        )
        for ax in (plain, overlay):
            ax.imshow(image, cmap="gray")
            ax.set_axis_off()
        top = int(max(prediction.max(initial=0), 0 if truth is None else truth.max(initial=0)))
        for c in range(1, top + 1):
            colour = _CLASS_COLOURS[(c - 1) % len(_CLASS_COLOURS)]
            tint = np.ma.masked_where(prediction != c, np.ones_like(prediction, dtype=float))
            overlay.imshow(tint, cmap=ListedColormap([colour]), alpha=0.45, vmin=0, vmax=1)
            if truth is not None and (truth == c).any() and (truth != c).any():
                overlay.contour(truth == c, levels=[0.5], colors=[colour], linewidths=1.2)
        name = titles[row] if titles is not None else f"case {row}"
        plain.set_title(name, fontsize=8)
        overlay.set_title("prediction (tint), truth (outline)", fontsize=8)
    return _save(figure, path)


def _gray(image: np.ndarray, label_dims: int) -> np.ndarray:
    """The first channel when the image has one axis more than its label map."""
    return image[0] if image.ndim == label_dims + 1 else image


def _slice(image, truth, prediction):
    """2D as is (rows, columns); 3D (X, Y, Z): the last-axis slice with the most truth (else
    predicted) foreground, drawn with X across and Y down."""
    if prediction.ndim == 2:
        return image, truth, prediction
    reference = truth if truth is not None and truth.any() else prediction
    z = int(np.argmax((reference > 0).sum(axis=(0, 1))))
    return image[..., z].T, None if truth is None else truth[..., z].T, prediction[..., z].T


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: str | Path) -> Path:
    path = Path(path)
    atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
    return path
