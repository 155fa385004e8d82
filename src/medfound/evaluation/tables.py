"""Per-class tables of a run's figures for the terminal (rich)."""

from rich.table import Table

from medfound.evaluation.bootstrap import Figure

_TITLES = {
    "auc": "AUC",
    "ap": "AP",
    "dice": "Dice",
    "iou": "IoU",
    "hd95": "HD95",
    "n_pos": "positives",
    "n_neg": "negatives",
}
_COUNTS = ("n_pos", "n_neg", "true_voxels", "pred_voxels")


def format_figure(figure) -> str:
    """'0.912 [0.871, 0.944]' for a figure with an interval (a Figure or its dict), '0.912' for a
    bare number, 'undefined' for None; counts as integers."""
    if isinstance(figure, dict):
        figure = Figure(figure.get("value"), figure.get("low"), figure.get("high"), 0)
    if isinstance(figure, Figure):
        return str(figure)
    if figure is None:
        return "undefined"
    if isinstance(figure, int):
        return str(figure)
    return f"{figure:.3f}"


def class_table(metrics: dict, title: str) -> Table:
    """One row per class (its figures, e.g. AUC and AP with their intervals, and counts), then a
    macro row (from the "macro_<figure>" or "mean_<figure>" entries); other top-level figures
    (accuracy, balanced accuracy) in the caption.

    `metrics` is a `classification_metrics` / `segmentation_metrics` result whose figures may be
    numbers, None (shown as "undefined"), `Figure`s or their dicts.
    """
    per_class = metrics.get("per_class", {})
    columns: list[str] = []
    for figures in per_class.values():
        columns += [key for key in figures if key not in columns]
    table = Table(title=title, title_justify="left")
    table.add_column("class")
    for key in columns:
        table.add_column(_TITLES.get(key, key), justify="right")
    for name, figures in per_class.items():
        table.add_row(str(name), *(format_figure(figures.get(key)) for key in columns))
    summary = []
    for key in columns:
        found = [f"{prefix}_{key}" for prefix in ("macro", "mean") if f"{prefix}_{key}" in metrics]
        summary.append(format_figure(metrics[found[0]]) if found else "")
    if any(summary):
        table.add_section()
        table.add_row("macro", *summary, style="bold")
    shown = {f"{prefix}_{key}" for prefix in ("macro", "mean") for key in columns}
    others = [
        f"{key.replace('_', ' ')} {format_figure(value)}"
        for key, value in metrics.items()
        if key != "per_class" and key not in shown and _is_figure(value)
    ]
    if others:
        table.caption = "; ".join(others)
        table.caption_justify = "left"
    return table


def _is_figure(value) -> bool:
    return (
        value is None
        or isinstance(value, float | Figure)
        or (isinstance(value, dict) and "value" in value)
    )
