"""Segmentation metrics of one case: Dice, foreground IoU and HD95 per foreground class, and the
Models Genesis "mean IoU" under its own name.

Conventions for empty masks (per class and case), so that no case ever raises or yields NaN:
- truth and prediction both empty: Dice 1, IoU 1, HD95 0 (nothing to find, nothing found);
- one of them empty: Dice 0, IoU 0, HD95 None (a distance to nothing is undefined; summaries count
  these cases instead of averaging an infinity).
"""

import warnings
from collections.abc import Sequence

import numpy as np

from medfound.errors import ConfigError

# The Genesis papers' thresholds: 0.5, 0.55, ..., 0.95 (rounded: np.arange's steps drift)
GENESIS_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def segmentation_metrics(
    pred_labels,
    true_labels,
    num_classes: int,
    spacing: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
) -> dict:
    """Dice, IoU and HD95 (MONAI, in the units of `spacing`, else voxels) of each foreground class.

    `pred_labels` and `true_labels` are label maps (arrays or tensors of ints in [0, num_classes),
    2D or 3D, same shape). Returns {"per_class": {name: {"dice", "iou", "hd95", "true_voxels",
    "pred_voxels"}}, "mean_dice", "mean_iou", "mean_hd95"} with names from `classes` (index 0 the
    background) or the class numbers; the means are over foreground classes, HD95's over the classes
    where it is defined (None if none). See the module docstring for empty masks.
    """
    pred, true = _labels(pred_labels), _labels(true_labels)
    if pred.shape != true.shape:
        raise ValueError(f"prediction {pred.shape} and truth {true.shape} differ in shape")
    if num_classes < 2:
        raise ConfigError(
            f"segmentation needs at least 2 classes (background + 1), got {num_classes}"
        )
    for name, labels in (("prediction", pred), ("truth", true)):
        if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
            raise ValueError(f"{name} labels must lie in [0, {num_classes})")
    names = list(classes) if classes is not None else [str(c) for c in range(num_classes)]
    if len(names) != num_classes:
        raise ValueError(f"{len(names)} class names for {num_classes} classes")

    # One pass over the voxels for every class (MONAI's DiceMetric/MeanIoU want one-hot tensors of
    # every class; the tests check these values against them).
    confusion = np.bincount(
        (true.ravel() * num_classes + pred.ravel()), minlength=num_classes**2
    ).reshape(num_classes, num_classes)  # rows: truth, columns: prediction
    hd95 = _hd95(pred, true, num_classes, spacing, confusion)
    per_class = {}
    for c in range(1, num_classes):
        hit, n_true, n_pred = confusion[c, c], confusion[c].sum(), confusion[:, c].sum()
        if n_true == 0 and n_pred == 0:
            dice = iou = 1.0
        else:
            dice = float(2 * hit / (n_true + n_pred))
            iou = float(hit / (n_true + n_pred - hit))
        per_class[names[c]] = {
            "dice": dice,
            "iou": iou,
            "hd95": hd95[c],
            "true_voxels": int(n_true),
            "pred_voxels": int(n_pred),
        }
    distances = [v["hd95"] for v in per_class.values() if v["hd95"] is not None]
    return {
        "per_class": per_class,
        "mean_dice": float(np.mean([v["dice"] for v in per_class.values()])),
        "mean_iou": float(np.mean([v["iou"] for v in per_class.values()])),
        "mean_hd95": float(np.mean(distances)) if distances else None,
    }


def _labels(labels) -> np.ndarray:
    if hasattr(labels, "detach"):
        labels = labels.detach().cpu().numpy()
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub" and not np.all(labels == np.round(labels)):
        raise ValueError("label maps must hold integer class numbers")
    return labels.astype(np.int64)


def _hd95(pred, true, num_classes, spacing, confusion) -> dict[int, float | None]:
    """HD95 per foreground class by MONAI, only where both masks are non-empty (MONAI gives inf or
    NaN with a warning otherwise); the module's conventions elsewhere."""
    result: dict[int, float | None] = {}
    both = []
    for c in range(1, num_classes):
        n_true, n_pred = confusion[c].sum(), confusion[:, c].sum()
        if n_true and n_pred:
            both.append(c)
        else:
            result[c] = 0.0 if n_true == n_pred == 0 else None
    if both:
        import torch
        from monai.metrics import compute_hausdorff_distance

        chosen = np.asarray(both)[:, None]
        shape = (1, len(both), *pred.shape)
        one_hot_pred = torch.from_numpy(pred.reshape(1, -1) == chosen).reshape(shape)
        one_hot_true = torch.from_numpy(true.reshape(1, -1) == chosen).reshape(shape)
        if spacing is not None and len(spacing) != pred.ndim:
            raise ValueError(f"spacing {tuple(spacing)} does not match {pred.ndim}D masks")
        with warnings.catch_warnings():
            # MONAI 1.5-1.6 passes its own deprecated argument to get_mask_edges on every call
            warnings.filterwarnings("ignore", "[^\n]*always_return_as_numpy", FutureWarning)
            distances = compute_hausdorff_distance(
                one_hot_pred,
                one_hot_true,
                include_background=True,  # only the chosen foreground classes are passed
                percentile=95,
                spacing=None if spacing is None else [float(s) for s in spacing],
            )
        for c, value in zip(both, distances[0].tolist(), strict=True):
            result[c] = float(value)
    return result


def genesis_mean_iou(probabilities, truth) -> float:
    """The "IoU" of the Models Genesis papers: two-class mean IoU (background and foreground IoU
    averaged) of the prediction thresholded at 0.5, 0.55, ..., 0.95 (`probability > t`), averaged
    over the thresholds, with all the voxels given pooled (the original pooled its whole test set).

    Binary only. It runs well above the foreground IoU on the same predictions (the background
    class is easy): report it only under this name, beside Dice and foreground IoU. As in
    TensorFlow's mean_iou, a class absent from both prediction and truth at a threshold is left out
    of that threshold's mean.
    """
    p = np.asarray(
        probabilities.detach().cpu() if hasattr(probabilities, "detach") else probabilities
    )
    t = _labels(truth)
    if p.shape != t.shape:
        raise ValueError(f"probabilities {p.shape} and truth {t.shape} differ in shape")
    if t.size and (t.min() < 0 or t.max() > 1):
        raise ValueError("genesis_mean_iou is binary: truth must hold 0 and 1 only")
    if not t.size:
        raise ValueError("genesis_mean_iou of no voxels")
    truth_fg = t.ravel().astype(bool)
    p = p.ravel().astype(np.float64)
    means = []
    for threshold in GENESIS_THRESHOLDS:
        pred_fg = p > threshold
        ious = []
        for pred_c, true_c in ((pred_fg, truth_fg), (~pred_fg, ~truth_fg)):
            union = np.count_nonzero(pred_c | true_c)
            if union:
                ious.append(np.count_nonzero(pred_c & true_c) / union)
        means.append(np.mean(ious))
    return float(np.mean(means))
