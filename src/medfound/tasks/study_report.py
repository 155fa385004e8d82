"""The HTML report of a label-efficiency study, rendered from the study folder's files alone.

`render_report(STUDY_DIR)` reads study.yaml (shown as written), results.csv, summary.csv,
comparisons.csv, label_saving.csv and subsets.csv (the last three may be missing or empty; the
report says so), draws the plots into STUDY_DIR/plots (PNG and SVG, evaluation/study_plots.py) and
writes STUDY_DIR/report.html: one self-contained page (plots inline as SVG data URIs, CSS inline, no
scripts, a Content-Security-Policy that forbids every fetch), the same bytes for the same files.
"""

import base64
import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from medfound.errors import ConfigError, first_items
from medfound.evaluation.study_plots import (
    DEFAULT_REFERENCE,
    curve_stem,
    format_fraction,
    heatmap_stem,
    safe_name,
    save_fraction_curves,
    save_heatmap,
)
from medfound.files import atomic_write

REPORT_FILE = "report.html"
PLOTS_DIR = "plots"
CONFIG_FILE = "study.yaml"
TEMPLATE = "report_template.html"

# Columns each file must have (more are allowed and ignored); subsets.csv adds in_<fraction>.
COLUMNS = {
    "results.csv": ("task", "encoder", "protocol", "fraction", "seed", "metric", "value", "ci_low",
                    "ci_high", "n_train", "n_test"),
    "summary.csv": ("task", "encoder", "protocol", "fraction", "metric", "n_seeds", "mean", "sd",
                    "ci_low", "ci_high"),
    "comparisons.csv": ("task", "protocol", "fraction", "metric", "encoder_a", "encoder_b",
                        "n_seeds", "mean_diff", "p_value", "test"),
    "label_saving.csv": ("task", "protocol", "metric", "encoder", "reference", "reference_full",
                         "smallest_fraction", "saving"),
    "subsets.csv": ("id", "patient", "split"),
}  # fmt: skip
# Numeric columns (empty = undefined, shown as "n/a"); fractions must lie in (0, 1].
NUMBERS = {
    "results.csv": ("fraction", "value", "ci_low", "ci_high", "n_train", "n_test"),
    "summary.csv": ("fraction", "n_seeds", "mean", "sd", "ci_low", "ci_high"),
    "comparisons.csv": ("fraction", "n_seeds", "mean_diff", "p_value"),
    "label_saving.csv": ("reference_full", "smallest_fraction", "saving"),
    "subsets.csv": (),
}
REQUIRED = ("results.csv", "summary.csv")
SPLITS = ("train", "val", "test")

# What each protocol means, in words (shown for the protocols the study ran).
PROTOCOLS = {
    "knn": (
        "k-NN",
        "The encoder is frozen. Each test image takes the label vote of its k nearest "
        "training-subset images (k 20, or the subset's size when smaller) by cosine similarity "
        "of their embeddings, each vote weighted by exp(cosine / 0.07) as in DINO. Embeddings are "
        "computed once per encoder and cached, so every fraction and seed reuses them.",
    ),
    "linear_probe": (
        "Linear probe",
        "The encoder is frozen. A logistic regression is fitted on the training subset's "
        "embeddings; its regularisation strength is chosen by cross-validation inside the "
        "training subset, with folds grouped by patient, so the test split never tunes it.",
    ),
    "finetune": (
        "Fine-tuning",
        "The encoder gets a new classification head and is trained end to end on the training "
        "subset (a freeze_until setting, when given, keeps its first layers frozen), validated "
        "on the validation split and scored once on the test split.",
    ),
    "segment": (
        "Segmentation fine-tuning",
        "The encoder becomes the encoder of a segmentation network whose decoder is trained "
        "with it on the training subset's labelled masks, validated on the validation split "
        "and scored (Dice per class) on the test split.",
    ),
}


@dataclass
class Table:
    """A table as the template lays it out: every cell already a string."""

    caption: str
    header: list[str]
    rows: list[list[str]]
    numeric: list[bool] = field(default_factory=list)  # right-aligned columns
    row_classes: list[str] = field(default_factory=list)
    id: str = ""


@dataclass
class Plot:
    title: str
    src: str  # data: URI
    alt: str


def render_report(study_dir: str | Path, heatmap_fractions: Sequence[float] | None = None) -> Path:
    """Write STUDY_DIR/report.html (and the plots under STUDY_DIR/plots) from the study's files;
    returns the report's path.

    `heatmap_fractions`: the label fractions of the tasks x encoders heatmaps (default: study.yaml's
    `heatmap_fraction`, else the study's smallest); one heatmap per protocol and fraction, of the
    protocol's headline metric (the first summary.csv lists for it). The reference encoder (drawn
    dashed) is study.yaml's `reference`, else label_saving.csv's, else "scratch". Raises
    ConfigError when the folder, results.csv or summary.csv is missing, a file lacks a column or
    has a bad number, or a heatmap fraction is not one of the study's."""
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise ConfigError(f"study folder {study_dir} does not exist")
    tables = {name: _read_csv(study_dir, name) for name in COLUMNS}
    results, summary = tables["results.csv"], tables["summary.csv"]
    if not summary:
        raise ConfigError(f"{study_dir / 'summary.csv'} has no rows: no cell has finished yet")
    config_path = study_dir / CONFIG_FILE
    config = config_path.read_text(encoding="utf-8") if config_path.is_file() else None
    settings = _settings(config)
    reference = _reference(settings, tables["label_saving.csv"])
    if heatmap_fractions is None and isinstance(settings.get("heatmap_fraction"), int | float):
        heatmap_fractions = [float(settings["heatmap_fraction"])]

    plots_dir = study_dir / PLOTS_DIR
    sections = _result_sections(summary, plots_dir, reference)
    heatmaps = _heatmaps(summary, plots_dir, heatmap_fractions)
    protocols = sorted({r["protocol"] for r in summary}, key=_protocol_order)
    context = {
        "title": f"Label-efficiency study: {_name(settings) or study_dir.resolve().name}",
        "overview": _overview(summary, results),
        "protocols": [
            {"name": PROTOCOLS.get(p, (p, ""))[0], "key": p, "text": PROTOCOLS.get(p, ("", ""))[1]}
            for p in protocols
        ],
        "reference": reference,
        "data_tables": _data_tables(tables["subsets.csv"]),
        "sections": sections,
        "heatmaps": heatmaps,
        "comparisons": _comparisons_table(tables["comparisons.csv"]),
        "label_saving": _label_saving_table(tables["label_saving.csv"]),
        "results": _results_table(results),
        "config": config,
        "version": _version(),
    }
    html = _template().render(**context)
    path = study_dir / REPORT_FILE
    atomic_write(path, lambda tmp: tmp.write_text(html, encoding="utf-8"))
    return path


def _settings(config: str | None) -> dict:
    """study.yaml as a dict ({} when absent or unreadable: the report then shows it as written
    and uses its defaults)."""
    if config is None:
        return {}
    import yaml

    try:
        loaded = yaml.safe_load(config)
    except yaml.YAMLError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _name(settings: dict) -> str | None:
    name = settings.get("name")
    return name if isinstance(name, str) else None


def _reference(settings: dict, savings: list[dict] | None) -> str:
    if isinstance(settings.get("reference"), str):
        return settings["reference"]
    if savings:
        return savings[0]["reference"]
    return DEFAULT_REFERENCE


def _result_sections(summary: list[dict], plots_dir: Path, reference: str) -> list[dict]:
    """Per task, per (protocol, metric): the curve and the encoders x fractions table."""
    save_fraction_curves(summary, plots_dir, reference=reference)
    groups = _groups(summary)
    sections = []
    for task in sorted({g[0] for g in groups}):
        parts = []
        for key in (g for g in groups if g[0] == task):
            title = f"{task}: {_protocol_name(key[1])}, {key[2]}"
            parts.append(
                {
                    "plot": _plot(plots_dir / f"{curve_stem(*key)}.svg", title),
                    "table": _pivot_table(
                        groups[key], title, f"summary-{curve_stem(*key)[6:]}", reference
                    ),
                }
            )
        sections.append({"task": task, "parts": parts})
    return sections


def _heatmaps(
    summary: list[dict], plots_dir: Path, fractions: Sequence[float] | None
) -> list[Plot]:
    """Tasks x encoders per protocol (its headline metric) at each chosen fraction (default:
    the smallest, where encoders differ most and pretraining matters most)."""
    present = sorted({r["fraction"] for r in summary})
    if fractions is None:
        fractions = present[:1]
    unknown = [f for f in fractions if not any(math.isclose(f, p) for p in present)]
    if unknown:
        raise ConfigError(
            f"heatmap fraction(s) {first_items([f'{f:g}' for f in unknown])} are not among the "
            f"study's fractions {', '.join(f'{f:g}' for f in present)}"
        )
    plots = []
    headline: dict[str, str] = {}
    for r in summary:  # the first metric listed for a protocol is its headline
        headline.setdefault(r["protocol"], r["metric"])
    pairs = sorted(headline.items(), key=lambda pm: _protocol_order(pm[0]))
    for protocol, metric in pairs:
        for fraction in sorted(set(fractions)):
            try:
                save_heatmap(summary, plots_dir, fraction, protocol, metric)
            except ValueError:  # this protocol and metric were not run at that fraction
                continue
            title = f"{_protocol_name(protocol)}, {metric} at {format_fraction(fraction)}"
            svg = plots_dir / f"{heatmap_stem(protocol, metric, fraction)}.svg"
            plots.append(_plot(svg, f"tasks x encoders: {title}"))
    return plots


def _read_csv(study_dir: Path, name: str) -> list[dict] | None:
    """The rows of STUDY_DIR/NAME with numbers parsed (empty -> None); None when an optional file
    is missing, [] when it is empty."""
    path = study_dir / name
    if not path.is_file():
        if name in REQUIRED:
            raise ConfigError(
                f"{path} is missing: a study folder written by `medfound study` has "
                f"{' and '.join(REQUIRED)}"
            )
        return None
    with open(path, newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        rows = list(reader)
    if not header:  # an empty file: no rows yet
        return []
    missing = [c for c in COLUMNS[name] if c not in header]
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {first_items(missing)}")
    numbers = NUMBERS[name]
    bad = []
    for line, row in enumerate(rows, start=2):
        for column in numbers:
            text = (row[column] or "").strip()
            try:
                row[column] = float(text) if text else None
            except ValueError:
                bad.append(f"line {line} {column}={text!r}")
                continue
            fraction = row[column]
            if "fraction" in column and fraction is not None and not 0 < fraction <= 1:
                bad.append(f"line {line} {column}={text!r} (not in (0, 1])")
        if "fraction" in numbers and row["fraction"] is None:
            bad.append(f"line {line} fraction is empty")
    if bad:
        raise ConfigError(f"{path} has bad numbers: {first_items(bad, 5, '; ')}")
    return rows


def _groups(summary: list[dict]) -> dict[tuple[str, str, str], list[dict]]:
    """Rows by (task, protocol, metric): tasks by name, protocols from frozen to fine-tuned,
    metrics in summary.csv's order (the headline first)."""
    groups: dict[tuple[str, str, str], list[dict]] = {}
    metrics: dict[str, int] = {}
    for row in summary:
        groups.setdefault((row["task"], row["protocol"], row["metric"]), []).append(row)
        metrics.setdefault(row["metric"], len(metrics))
    order = sorted(groups, key=lambda k: (k[0], _protocol_order(k[1]), metrics[k[2]]))
    return {key: groups[key] for key in order}


def _pivot_table(rows: list[dict], caption: str, id: str, reference: str) -> Table:
    """Encoders (rows) x fractions (columns), each cell 'mean ± SD [CI] (n=seeds)'."""
    fractions = sorted({r["fraction"] for r in rows})
    encoders = sorted({r["encoder"] for r in rows})
    cells = {(r["encoder"], r["fraction"]): r for r in rows}
    body = []
    for encoder in encoders:
        line = [encoder]
        for fraction in fractions:
            r = cells.get((encoder, fraction))
            if r is None:
                line.append("not run")
                continue
            spread = "" if r["sd"] is None else f" ± {_num(r['sd'])}"
            seeds = "" if r["n_seeds"] is None else f" (n={_int(r['n_seeds'])})"
            line.append(f"{_num(r['mean'])}{spread} {_interval(r)}{seeds}")
        body.append(line)
    return Table(
        caption=f"{caption}: mean ± SD over seeds [95% CI]",
        header=["encoder", *(format_fraction(f) for f in fractions)],
        rows=body,
        numeric=[False, *(True for _ in fractions)],
        row_classes=["reference" if e == reference else "" for e in encoders],
        id=id,
    )


# The columns of the long tables: (header, cell of a row, right-aligned).
_COMPARISON_COLUMNS = (
    ("task", lambda r: r["task"], False),
    ("protocol", lambda r: _protocol_name(r["protocol"]), False),
    ("metric", lambda r: r["metric"], False),
    ("fraction", lambda r: format_fraction(r["fraction"]), False),
    ("encoder A", lambda r: r["encoder_a"], False),
    ("encoder B", lambda r: r["encoder_b"], False),
    ("seeds", lambda r: _int(r["n_seeds"]), True),
    ("mean difference", lambda r: _signed(r["mean_diff"]), True),
    ("p", lambda r: _p_value(r["p_value"]), True),
    ("test", lambda r: r["test"], False),
)
_SAVING_COLUMNS = (
    ("task", lambda r: r["task"], False),
    ("protocol", lambda r: _protocol_name(r["protocol"]), False),
    ("metric", lambda r: r["metric"], False),
    ("encoder", lambda r: r["encoder"], False),
    ("reference", lambda r: r["reference"], False),
    ("reference at 100%", lambda r: _num(r["reference_full"]), True),
    ("smallest fraction", lambda r: _percent(r["smallest_fraction"], "not reached"), True),
    ("saving", lambda r: _percent(r["saving"], "n/a"), True),
)
_RESULT_COLUMNS = (
    ("task", lambda r: r["task"], False),
    ("protocol", lambda r: _protocol_name(r["protocol"]), False),
    ("metric", lambda r: r["metric"], False),
    ("encoder", lambda r: r["encoder"], False),
    ("fraction", lambda r: format_fraction(r["fraction"]), True),
    ("seed", lambda r: r["seed"], True),
    ("value", lambda r: _num(r["value"]), True),
    ("95% CI", lambda r: _interval(r), True),
    ("training items", lambda r: _int(r["n_train"]), True),
    ("test items", lambda r: _int(r["n_test"]), True),
)


def _long_table(
    rows: list[dict], columns, caption: str, id: str, order: tuple
) -> tuple[Table, list[dict]]:
    """One row per CSV row, sorted by the `order` fields, cells made by `columns`; also
    returns the rows in that order."""
    rows = sorted(rows, key=lambda r: tuple(r[k] for k in order))
    table = Table(
        caption=caption,
        header=[c[0] for c in columns],
        rows=[[cell(r) for _, cell, _ in columns] for r in rows],
        numeric=[c[2] for c in columns],
        id=id,
    )
    return table, rows


def _comparisons_table(rows: list[dict] | None) -> Table | None:
    if not rows:
        return None
    table, rows = _long_table(
        rows,
        _COMPARISON_COLUMNS,
        "Paired comparisons across seeds (difference = encoder A − encoder B)",
        "comparisons",
        ("task", "protocol", "metric", "fraction", "encoder_a", "encoder_b"),
    )
    table.row_classes = [
        "significant" if r["p_value"] is not None and r["p_value"] < 0.05 else "" for r in rows
    ]
    return table


def _label_saving_table(rows: list[dict] | None) -> Table | None:
    if not rows:
        return None
    return _long_table(
        rows,
        _SAVING_COLUMNS,
        "Label saving (Models Genesis): the smallest fraction at which an encoder's mean "
        "reaches the reference's mean with all the labels",
        "label-saving",
        ("task", "protocol", "metric", "encoder"),
    )[0]


def _results_table(rows: list[dict]) -> Table:
    rows = [r | {"_seed": _seed_key(r["seed"])} for r in rows]  # numeric seeds in numeric order
    return _long_table(
        rows,
        _RESULT_COLUMNS,
        "Every cell: test metric with its patient-level bootstrap 95% CI",
        "results",
        ("task", "protocol", "metric", "encoder", "fraction", "_seed"),
    )[0]


def _data_tables(rows: list[dict] | None) -> list[Table]:
    """Per task (when subsets.csv has a task column): items and patients of each split and of
    each label fraction's training subset; where the seeds drew subsets of different sizes, the
    range over the seeds."""
    if not rows:
        return []
    fraction_columns = sorted(
        (c for c in rows[0] if c.startswith("in_") and _is_number(c[3:])),
        key=lambda c: float(c[3:]),
    )
    tasks: dict[str, dict[str, list[dict]]] = {}
    for row in rows:
        seeds = tasks.setdefault(row.get("task") or "", {})
        seeds.setdefault(row.get("seed") or "", []).append(row)
    tables = []
    for task, seeds in sorted(tasks.items()):
        splits = {r["split"] for group in seeds.values() for r in group}
        body = []
        for split in [*SPLITS, *sorted(splits - set(SPLITS))]:
            counts = [_counts([r for r in g if r["split"] == split]) for g in seeds.values()]
            body.append([f"{split} split", *_spans(counts)])
        for column in fraction_columns:
            counts = [_counts([r for r in g if _chosen(r[column])]) for g in seeds.values()]
            name = f"training subset at {format_fraction(float(column[3:]))}"
            body.append([name, *_spans(counts)])
        caption = f"Data: {task}" if task else "Data"
        if len(seeds) > 1:
            caption += f" (over {len(seeds)} seeds: a range where their subsets differ in size)"
        tables.append(
            Table(
                caption=caption,
                header=["set", "items", "patients"],
                rows=body,
                numeric=[False, True, True],
                id="data-" + safe_name(task or "all"),
            )
        )
    return tables


def _chosen(flag: str | None) -> bool:
    return (flag or "").strip().lower() in ("1", "1.0", "true")


def _counts(rows: list[dict]) -> tuple[int, int]:
    return len(rows), len({r["patient"] for r in rows})


def _spans(counts: list[tuple[int, int]]) -> list[str]:
    """'12' when every seed gave 12, else '11–13' (items, then patients)."""
    spans = []
    for values in zip(*counts, strict=True):
        low, high = min(values), max(values)
        spans.append(str(low) if low == high else f"{low}–{high}")
    return spans


def _overview(summary: list[dict], results: list[dict]) -> list[tuple[str, str]]:
    def names(values: Iterable[str]) -> str:
        return ", ".join(sorted(set(values)))

    seeds = sorted({r["seed"] for r in results}, key=_seed_key)
    return [
        ("tasks", names(r["task"] for r in summary)),
        ("encoders", names(r["encoder"] for r in summary)),
        (
            "protocols",
            ", ".join(
                _protocol_name(p)
                for p in sorted({r["protocol"] for r in summary}, key=_protocol_order)
            ),
        ),
        (
            "label fractions",
            ", ".join(format_fraction(f) for f in sorted({r["fraction"] for r in summary})),
        ),
        ("seeds", ", ".join(seeds) if seeds else "n/a"),
        ("finished cells", str(len({_cell(r) for r in results}))),
    ]


def _cell(row: dict) -> tuple:
    return row["task"], row["encoder"], row["protocol"], row["fraction"], row["seed"]


def _plot(svg: Path, title: str) -> Plot:
    """The SVG as a data URI: each plot stays its own document (matplotlib's element ids would
    clash if several were inlined into one page) and the page needs no other file."""
    data = base64.b64encode(svg.read_bytes()).decode("ascii")
    return Plot(title=title, src=f"data:image/svg+xml;base64,{data}", alt=title)


def _template():
    import jinja2

    text = resources.files("medfound.tasks").joinpath(TEMPLATE).read_text(encoding="utf-8")
    env = jinja2.Environment(
        autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True
    )
    return env.from_string(text)


def _version() -> str:
    from medfound import __version__

    return __version__


def _protocol_order(protocol: str) -> tuple[int, str]:
    """The order of PROTOCOLS (frozen to fine-tuned), then other names alphabetically."""
    known = list(PROTOCOLS)
    return (known.index(protocol), "") if protocol in known else (len(known), protocol)


def _protocol_name(protocol: str) -> str:
    return PROTOCOLS.get(protocol, (protocol, ""))[0]


def _num(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _signed(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:+.3f}"


def _int(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else str(round(value))


def _interval(row: dict) -> str:
    low, high = row["ci_low"], row["ci_high"]
    if low is None or high is None:
        return "[n/a]"
    return f"[{_num(low)}, {_num(high)}]"


def _percent(fraction: float | None, absent: str) -> str:
    return absent if fraction is None else format_fraction(fraction)


def _p_value(p: float | None) -> str:
    if p is None or not math.isfinite(p):
        return "n/a"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _seed_key(seed: str) -> tuple:
    """Seeds sort as numbers when they are numbers ('2' before '10')."""
    text = str(seed)
    return (0, float(text), "") if _is_number(text) else (1, 0.0, text)
