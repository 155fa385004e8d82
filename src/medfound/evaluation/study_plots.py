"""Figures of a label-efficiency study: metric against label fraction per encoder (with the CI
band), and a tasks x encoders heatmap at one fraction; each as PNG and SVG.

Rows are those of summary.csv (task, encoder, protocol, fraction, metric, n_seeds, mean, sd,
ci_low, ci_high), as read by csv.DictReader (strings; an empty CI is no interval) or with numbers.
matplotlib is used through its object API (`Figure` with the Agg canvas), so drawing never changes
pyplot's process-wide state. The SVGs carry no date and a fixed id salt, so the same rows give
byte-identical files (the HTML report embeds them and is itself deterministic).
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np

from medfound.files import atomic_write

# Colours of encoders in the order of their sorted names, the same in every figure of a study.
_COLOURS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#9467bd",
    "#ff7f00",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#bcbd22",
    "#7f7f7f",
)
# The encoder label savings are measured against (training from scratch), drawn dashed.
DEFAULT_REFERENCE = "scratch"
FORMATS = ("png", "svg")


def save_fraction_curves(
    summary_rows: Iterable[Mapping], out_dir: str | Path, *, reference: str = DEFAULT_REFERENCE
) -> list[Path]:
    """Per (task, protocol, metric): the mean metric against the label fraction, one line per
    encoder with its CI band (ci_low..ci_high where given), on a log x-axis whose ticks are the
    study's fractions as percentages, the `reference` encoder dashed; written as
    OUT/curve_<task>_<protocol>_<metric>.png and .svg. Returns the paths written, in sorted
    (task, protocol, metric) order."""
    rows = _rows(summary_rows)
    colours = _encoder_colours(rows)
    groups: dict[tuple[str, str, str], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["protocol"], row["metric"]), []).append(row)
    written = []
    for (task, protocol, metric), group in sorted(groups.items()):
        figure = _figure((6.0, 4.2))
        ax = figure.add_subplot()
        fractions = sorted({r["fraction"] for r in group})
        for encoder in sorted({r["encoder"] for r in group}):
            points = sorted((r for r in group if r["encoder"] == encoder), key=_by_fraction)
            x = np.array([r["fraction"] for r in points])
            mean = np.array([r["mean"] for r in points])
            low = np.array([r["ci_low"] for r in points])
            high = np.array([r["ci_high"] for r in points])
            style = "--" if encoder == reference else "-"
            colour = colours[encoder]
            ax.plot(x, mean, style, marker="o", ms=4, lw=1.6, color=colour, label=encoder)
            band = np.isfinite(low) & np.isfinite(high)
            if band.any():  # a missing interval leaves a gap in the band, never a made-up one
                ax.fill_between(x, low, high, where=band, color=colour, alpha=0.18, lw=0)
        _fraction_axis(ax, fractions)
        ax.set_xlabel("labelled training fraction")
        ax.set_ylabel(metric)
        ax.set_title(f"{task}: {protocol}", fontsize=10)
        ax.grid(True, which="major", lw=0.4, alpha=0.5)
        ax.legend(fontsize=8, title="encoder", title_fontsize=8, loc="best")
        written += _save(figure, Path(out_dir), curve_stem(task, protocol, metric))
    return written


def save_heatmap(
    summary_rows: Iterable[Mapping],
    out_dir: str | Path,
    fraction: float,
    protocol: str,
    metric: str,
) -> list[Path]:
    """Tasks (rows) x encoders (columns) of the mean `metric` of `protocol` at label `fraction`,
    each cell annotated with its value (cells the study lacks are blank and marked "n/a"); written
    as OUT/heatmap_<protocol>_<metric>_<fraction>.png and .svg. Raises ValueError when no row
    matches."""
    rows = [
        r
        for r in _rows(summary_rows)
        if r["protocol"] == protocol
        and r["metric"] == metric
        and math.isclose(r["fraction"], fraction, rel_tol=1e-9, abs_tol=1e-12)
    ]
    if not rows:
        raise ValueError(f"no summary rows for {protocol} / {metric} at fraction {fraction:g}")
    tasks = sorted({r["task"] for r in rows})
    encoders = sorted({r["encoder"] for r in rows})
    values = np.full((len(tasks), len(encoders)), np.nan)
    for r in rows:
        values[tasks.index(r["task"]), encoders.index(r["encoder"])] = r["mean"]
    figure = _figure((1.6 + 1.25 * len(encoders), 1.4 + 0.55 * len(tasks)))
    ax = figure.add_subplot()
    finite = values[np.isfinite(values)]
    low, high = (finite.min(), finite.max()) if finite.size else (0.0, 1.0)
    if high <= low:  # one value (or all equal): a flat colour scale still needs a range
        low, high = low - 0.5, high + 0.5
    from matplotlib import colormaps

    cmap = colormaps["viridis"].with_extremes(bad="white")  # a copy: the registry's stays as is
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=high)
    for i in range(len(tasks)):
        for j in range(len(encoders)):
            v = values[i, j]
            if not np.isfinite(v):
                ax.text(j, i, "n/a", ha="center", va="center", fontsize=8, color="gray")
                continue
            dark = (v - low) / (high - low) < 0.6  # viridis is dark below about 60 %
            ax.text(
                j, i, f"{v:.3f}", ha="center", va="center", fontsize=8,
                color="white" if dark else "black",
            )  # fmt: skip
    ax.set_xticks(range(len(encoders)), encoders, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(tasks)), tasks, fontsize=8)
    ax.set_title(f"{protocol}: {metric} at {format_fraction(fraction)} of the labels", fontsize=9)
    figure.colorbar(image, ax=ax, shrink=0.8).ax.tick_params(labelsize=7)
    return _save(figure, Path(out_dir), heatmap_stem(protocol, metric, fraction))


def curve_stem(task: str, protocol: str, metric: str) -> str:
    """The file name (without suffix) of a curve: curve_<task>_<protocol>_<metric>."""
    return f"curve_{safe_name(task)}_{safe_name(protocol)}_{safe_name(metric)}"


def heatmap_stem(protocol: str, metric: str, fraction: float) -> str:
    """The file name (without suffix) of a heatmap: heatmap_<protocol>_<metric>_<fraction>, the
    fraction as written in summary.csv's style (0.05, 1)."""
    return f"heatmap_{safe_name(protocol)}_{safe_name(metric)}_{fraction:g}"


def format_fraction(fraction: float) -> str:
    """A label fraction as a percentage: 0.01 -> '1%', 0.125 -> '12.5%', 1.0 -> '100%'."""
    return f"{100 * fraction:.4g}%"


def safe_name(text: str) -> str:
    """`text` with every character but letters, digits, '.', '-' and '_' replaced by '-', for
    file names built from task, protocol and metric names."""
    return re.sub(r"[^A-Za-z0-9._-]", "-", str(text)) or "-"


def _rows(summary_rows: Iterable[Mapping]) -> list[dict]:
    """The fields the figures use, with numbers as floats (empty or missing -> NaN)."""
    rows = []
    for row in summary_rows:
        rows.append(
            {
                "task": str(row["task"]),
                "encoder": str(row["encoder"]),
                "protocol": str(row["protocol"]),
                "metric": str(row["metric"]),
                "fraction": float(row["fraction"]),
                **{key: _number(row.get(key)) for key in ("mean", "ci_low", "ci_high")},
            }
        )
    return rows


def _number(value) -> float:
    if value is None or (isinstance(value, str) and not value.strip()):
        return math.nan
    return float(value)


def _by_fraction(row: dict) -> float:
    return row["fraction"]


def _encoder_colours(rows: Sequence[dict]) -> dict[str, str]:
    encoders = sorted({r["encoder"] for r in rows})
    return {e: _COLOURS[i % len(_COLOURS)] for i, e in enumerate(encoders)}


def _fraction_axis(ax, fractions: Sequence[float]) -> None:
    """Log x-axis with exactly the study's fractions as (percentage) ticks, a little margin on
    both sides."""
    from matplotlib.ticker import NullLocator

    ax.set_xscale("log")
    ax.set_xticks(fractions, [format_fraction(f) for f in fractions])
    ax.xaxis.set_minor_locator(NullLocator())
    lo, hi = min(fractions), max(fractions)
    ax.set_xlim(lo / 1.3, hi * 1.3)


def _figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=figsize, dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure, out_dir: Path, stem: str) -> list[Path]:
    """OUT/STEM.png and OUT/STEM.svg, atomically. The SVG's ids come from a fixed salt and it has
    no date, so it is reproducible (matplotlib reads the salt from rcParams while saving, hence
    the brief rc_context)."""
    import matplotlib

    paths = []
    for i, fmt in enumerate(FORMATS):
        if i:  # keep the layout the first save computed: the same figure, a third faster
            figure.set_layout_engine("none")
        path = out_dir / f"{stem}.{fmt}"
        metadata = {"Date": None} if fmt == "svg" else {}

        def write(tmp: Path, fmt=fmt, metadata=metadata) -> None:
            with matplotlib.rc_context({"svg.hashsalt": "medfound-study"}):
                figure.savefig(tmp, format=fmt, metadata=metadata)

        atomic_write(path, write)
        paths.append(path)
    return paths
