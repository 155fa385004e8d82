"""The headline of a study as plain text: per task, its main metric's mean +- SD over seeds for every
protocol and encoder (rows) at every label fraction (columns), read from STUDY_DIR/summary.csv.
Printed by `medfound study` and `medfound demo`; the HTML report has the full tables."""

import csv
from pathlib import Path

from medfound.errors import ConfigError

# The metric a task is summarised by, in order of preference (the first the study has).
MAIN_METRICS = ("macro_auc", "mean_dice")


def summary_table(study_dir: str | Path) -> str:
    """Text tables of STUDY_DIR/summary.csv, one per task; ConfigError when it is missing."""
    path = Path(study_dir) / "summary.csv"
    if not path.is_file():
        raise ConfigError(f"{path}: no summary yet (run the study first)")
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    blocks = []
    for task in dict.fromkeys(r["task"] for r in rows):
        mine = [r for r in rows if r["task"] == task]
        metrics = {r["metric"] for r in mine}
        metric = next((m for m in MAIN_METRICS if m in metrics), sorted(metrics)[0])
        blocks.append(_task_table(task, metric, [r for r in mine if r["metric"] == metric]))
    return "\n\n".join(blocks)


def _task_table(task: str, metric: str, rows: list[dict]) -> str:
    fractions = sorted({float(r["fraction"]) for r in rows})
    cells: dict[tuple[str, str], dict[float, str]] = {}
    for r in rows:
        cells.setdefault((r["protocol"], r["encoder"]), {})[float(r["fraction"])] = _mean_sd(r)
    header = ["protocol", "encoder", *(f"{100 * f:g}% labels" for f in fractions)]
    order = {protocol: i for i, protocol in enumerate(dict.fromkeys(r["protocol"] for r in rows))}
    body = [  # each protocol's encoders side by side, in the study's order
        [protocol, encoder, *(values.get(f, "") for f in fractions)]
        for (protocol, encoder), values in sorted(cells.items(), key=lambda c: order[c[0][0]])
    ]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(values: list[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    seeds = max(int(r["n_seeds"]) for r in rows)
    title = f"{task}: test {metric}, mean +- SD over {seeds} seed{'s' * (seeds != 1)}"
    return "\n".join([title, line(header), *(line(b) for b in body)])


def _mean_sd(row: dict) -> str:
    if not row["mean"]:
        return "n/a"
    text = f"{float(row['mean']):.3f}"
    return f"{text} +- {float(row['sd']):.3f}" if row["sd"] else text
