"""A generated study folder in the schema `medfound study` writes (study.yaml, results.csv,
summary.csv, comparisons.csv, label_saving.csv, subsets.csv), for the report's tests.

Results follow a plausible curve (pretrained encoders learn faster than scratch); the summary,
comparisons and label saving are computed from them by hand here (scipy for the t-interval and
the paired test), not by medfound.
"""

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

FRACTIONS = (0.1, 0.5, 1.0)
SEEDS = (0, 1)
ENCODERS = ("scratch", "bit:r50x1")
# task -> (protocols, metrics)
TASKS = {
    "chest<xray>": (("knn", "linear_probe"), ("macro_auc", "accuracy")),
    "brain": (("segment",), ("mean_dice",)),
}
# A StudyConfig as `medfound study` saves it (the comment: user text the report must escape).
CONFIG = """\
# smoke study <script>alert(1)</script>
tasks:
  - name: chest<xray>
    kind: classify
    data: data/labels.csv
  - name: brain
    kind: segment
    data: data/brain
encoders:
  - name: scratch
    model: timm:resnet18
    init: random
  - name: bit:r50x1
    model: resnetv2_50x1_bit.goog_in21k
    init: weights/bit.safetensors
protocols: [knn, linear_probe, segment]
fractions: [0.1, 0.5, 1.0]
seeds: [0, 1]
reference: scratch
"""


@dataclass
class StudyFixture:
    folder: Path
    summary: list[dict]
    results: list[dict]
    comparisons: list[dict]
    label_saving: list[dict]
    subsets: list[dict]


def write_study(
    folder: Path, *, tasks: dict | None = None, comparisons: bool = True, label_saving: bool = True
) -> StudyFixture:
    """Write a two-encoder, three-fraction, two-seed study folder of `tasks` (task -> (protocols,
    metrics); default TASKS: two tasks, three protocols); without `comparisons`/`label_saving`
    those files are absent (as in a one-seed study)."""
    tasks = TASKS if tasks is None else tasks
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "study.yaml").write_text(CONFIG)

    results = []
    for task, (protocols, metrics) in tasks.items():
        for encoder in ENCODERS:
            lift = 0.0 if encoder == "scratch" else 0.2
            for protocol in protocols:
                for metric in metrics:
                    for fraction in FRACTIONS:
                        for seed in SEEDS:
                            base = 0.55 + 0.3 * fraction**0.5 + lift * (1.1 - fraction)
                            value = float(np.clip(base + rng.normal(0, 0.01), 0, 1))
                            results.append({
                                "task": task, "encoder": encoder, "protocol": protocol,
                                "fraction": fraction, "seed": seed, "metric": metric,
                                "value": value, "ci_low": value - 0.04, "ci_high": value + 0.04,
                                "n_train": round(160 * fraction), "n_test": 40,
                            })  # fmt: skip
    summary = _summary(results)
    comparison_rows = _comparisons(results, tasks)
    saving_rows = _label_saving(summary, tasks)
    subsets = _subsets(tasks)

    _write(folder / "results.csv", results)
    _write(folder / "summary.csv", summary)
    if comparisons:
        _write(folder / "comparisons.csv", comparison_rows)
    if label_saving:
        _write(folder / "label_saving.csv", saving_rows)
    _write(folder / "subsets.csv", subsets)
    return StudyFixture(folder, summary, results, comparison_rows, saving_rows, subsets)


def _summary(results: list[dict]) -> list[dict]:
    cells: dict[tuple, list[float]] = {}
    for r in results:
        key = (r["task"], r["encoder"], r["protocol"], r["fraction"], r["metric"])
        cells.setdefault(key, []).append(r["value"])
    rows = []
    for (task, encoder, protocol, fraction, metric), values in cells.items():
        v = np.array(values)
        half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v))
        rows.append({
            "task": task, "encoder": encoder, "protocol": protocol, "fraction": fraction,
            "metric": metric, "n_seeds": len(v), "mean": v.mean(), "sd": v.std(ddof=1),
            "ci_low": v.mean() - half, "ci_high": v.mean() + half,
        })  # fmt: skip
    return rows


def _comparisons(results: list[dict], tasks: dict) -> list[dict]:
    by_cell = {
        (r["task"], r["encoder"], r["protocol"], r["fraction"], r["metric"], r["seed"]): r["value"]
        for r in results
    }
    rows = []
    for task, (protocols, metrics) in tasks.items():
        for protocol in protocols:
            for metric in metrics:
                for fraction in FRACTIONS:
                    a = np.array([by_cell[task, ENCODERS[1], protocol, fraction, metric, s]
                                  for s in SEEDS])  # fmt: skip
                    b = np.array([by_cell[task, ENCODERS[0], protocol, fraction, metric, s]
                                  for s in SEEDS])  # fmt: skip
                    rows.append({
                        "task": task, "protocol": protocol, "fraction": fraction,
                        "metric": metric, "encoder_a": ENCODERS[1], "encoder_b": ENCODERS[0],
                        "n_seeds": len(SEEDS), "mean_diff": float((a - b).mean()),
                        "p_value": float(stats.ttest_rel(a, b).pvalue), "test": "paired t",
                    })  # fmt: skip
    return rows


def _label_saving(summary: list[dict], tasks: dict) -> list[dict]:
    means = {
        (r["task"], r["protocol"], r["metric"], r["encoder"], r["fraction"]): r["mean"]
        for r in summary
    }
    rows = []
    for task, (protocols, metrics) in tasks.items():
        for protocol in protocols:
            for metric in metrics:
                full = means[task, protocol, metric, "scratch", 1.0]
                for encoder in ENCODERS[1:]:
                    reached = [f for f in FRACTIONS
                               if means[task, protocol, metric, encoder, f] >= full]  # fmt: skip
                    smallest = min(reached) if reached else ""
                    rows.append({
                        "task": task, "protocol": protocol, "metric": metric,
                        "encoder": encoder, "reference": "scratch", "reference_full": full,
                        "smallest_fraction": smallest,
                        "saving": 1 - smallest if reached else "",
                    })  # fmt: skip
    return rows


def _subsets(tasks: dict) -> list[dict]:
    """Per task and seed, 20 patients x 2 images: 12 train, 4 val, 4 test patients; nested
    training subsets of 2, 6 and 12 train patients for 10%, 50% and 100% (7 at 50% for seed 1,
    whose subsets thus differ in size)."""
    rows = []
    for task in tasks:
        for seed in SEEDS:
            half = 6 + seed
            for p in range(20):
                split = "train" if p < 12 else "val" if p < 16 else "test"
                for k in range(2):
                    rows.append({
                        "task": task, "seed": seed, "id": f"/data/{task}/p{p:02d}_{k}.png",
                        "patient": f"p{p:02d}", "split": split,
                        "in_0.1": int(split == "train" and p < 2),
                        "in_0.5": int(split == "train" and p < half),
                        "in_1.0": int(split == "train"),
                    })  # fmt: skip
    return rows


def _write(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
