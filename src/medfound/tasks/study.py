"""`medfound study --config STUDY.yaml --out STUDY_DIR`: label-efficiency curves in one command.

Every cell of tasks x encoders x protocols x label fractions x seeds runs on its own and records its
result in STUDY_DIR/cells/<cell>/result.json (written last, atomically): a killed study continues
where it stopped and a finished cell is never recomputed; a fine-tuning cell that was cut short
resumes from its checkpoint. The split (train/val/test by patient) is fixed by `split_seed` for
the whole study; each seed draws nested per-patient label subsets of the training patients
(evaluation/label_fractions.py), the same for every encoder and protocol, so encoders are compared
on the same images. Probes embed each task once per encoder (cached, `medfound embed`'s Parquet)
and fit in seconds. Under torchrun the cells are dealt to the ranks (each runs its cells as one
process); rank 0 waits for all of them and writes results.csv, summary.csv, comparisons.csv,
label_saving.csv, the plots and report.html.
"""

import csv
import json
import logging
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from medfound.engine.config import from_dict, load_config
from medfound.errors import ConfigError
from medfound.files import atomic_write
from medfound.tasks.study_config import PROBE_PROTOCOLS, Cell, StudyConfig, StudyTask, cells_of

log = logging.getLogger(__name__)

STUDY_FILE = "study.yaml"
RESULT_FILE = "result.json"
RESULTS_FILE = "results.csv"
SUMMARY_FILE = "summary.csv"
COMPARISONS_FILE = "comparisons.csv"
SAVING_FILE = "label_saving.csv"
SUBSETS_FILE = "subsets.csv"
# Settings a continued study may change: none of them changes a result.
_MAY_CHANGE = frozenset(
    {"device", "workers", "embed_batch_size", "heatmap_fraction", "keep_checkpoints"}
)
RESULT_COLUMNS = [
    "task", "encoder", "protocol", "fraction", "seed", "metric", "value", "ci_low", "ci_high",
    "n_train", "n_test",
]  # fmt: skip
# The figures each protocol reports (its headline first).
METRICS = {
    "multiclass": ("macro_auc", "accuracy", "balanced_accuracy"),
    "multilabel": ("macro_auc",),
    "segment": ("mean_dice", "mean_iou"),
}


@dataclass
class StudySummary:
    """What a study invocation did."""

    out: Path
    cells: int = 0
    computed: list[str] = field(default_factory=list)  # cells run now
    reused: int = 0  # cells finished before
    report: Path | None = None
    seconds: float = 0.0


def load_study_config(path: str | Path) -> StudyConfig:
    """A StudyConfig from YAML, checked field by field."""
    config = load_config(StudyConfig, path)
    config.validate()
    return config


def run_study(config: StudyConfig | str | Path, out: str | Path) -> StudySummary:
    """Run (or continue) every cell of the study into `out`, then aggregate and report."""
    started = time.perf_counter()
    out = Path(out)
    if not isinstance(config, StudyConfig):
        config = load_study_config(config)
    config.validate()
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    _claim(out, config, main=rank == 0)
    cells = cells_of(config)
    summary = StudySummary(out=out, cells=len(cells))
    if rank == 0 and not (out / SUBSETS_FILE).is_file():
        write_subsets(out, config)
    prepare_embeddings(config, out, rank, world)
    for index, cell in enumerate(cells):
        if index % world != rank:
            continue
        if (out / "cells" / cell.id / RESULT_FILE).is_file():
            summary.reused += 1
            _drop_checkpoints(config, out, cell)  # a kill may have come between result and drop
            continue
        log.info("cell %d/%d: %s", index + 1, len(cells), cell.id)
        with _one_process():
            result = _run_cell(config, cell, out)
        text = json.dumps(result, indent=2, sort_keys=True, allow_nan=False)
        atomic_write(out / "cells" / cell.id / RESULT_FILE, lambda tmp, t=text: tmp.write_text(t))
        _drop_checkpoints(config, out, cell)
        summary.computed.append(cell.id)
    if rank != 0:
        return summary
    _wait_until([out / "cells" / c.id / RESULT_FILE for c in cells])  # every rank's cells
    aggregate(out, config)
    from medfound.tasks.study_report import render_report

    summary.report = render_report(out)
    summary.seconds = time.perf_counter() - started
    return summary


def _claim(out: Path, config: StudyConfig, main: bool) -> None:
    """A new study needs an empty folder; an existing one continues only with the same config."""
    saved = out / STUDY_FILE
    text = yaml.safe_dump(_plain(config), sort_keys=False)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder; choose another --out")
    if not main:  # rank 0 claims the folder; the others wait for its study.yaml
        deadline = time.monotonic() + 600
        while not saved.is_file():
            if time.monotonic() > deadline:
                raise ConfigError(f"{out}: rank 0 never wrote {saved.name}")
            time.sleep(0.5)
    if saved.is_file():
        before, now = yaml.safe_load(saved.read_text()) or {}, yaml.safe_load(text)
        changed = sorted(
            k
            for k in set(before) | set(now)
            if k not in _MAY_CHANGE and before.get(k) != now.get(k)
        )
        if changed:
            raise ConfigError(
                f"{out} holds another study ({saved.name} differs in {', '.join(changed)}); "
                f"choose another --out, or change only {sorted(_MAY_CHANGE)}"
            )
        return
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if entries:
        raise ConfigError(f"{out} is not empty and holds no study; choose another --out")
    if main:
        atomic_write(saved, lambda tmp: tmp.write_text(text))


def _plain(config: StudyConfig) -> dict:
    import dataclasses

    return json.loads(json.dumps(dataclasses.asdict(config)))


@contextmanager
def _one_process():
    """Run a cell as a single process even under torchrun (cells, not batches, are spread)."""
    # LOCAL_RANK stays: each rank keeps its own GPU; LOCAL_WORLD_SIZE stays: workers per rank.
    saved = {k: os.environ.get(k) for k in ("RANK", "WORLD_SIZE")}
    os.environ.update({"RANK": "0", "WORLD_SIZE": "1"})
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --- one cell ---------------------------------------------------------------------------------


def _task(config: StudyConfig, name: str) -> StudyTask:
    return next(t for t in config.tasks if t.name == name)


def _encoder(config: StudyConfig, name: str):
    return next(e for e in config.encoders if e.name == name)


def _drop_checkpoints(config: StudyConfig, out: Path, cell: Cell) -> None:
    """Remove a finished cell's training checkpoints (hundreds of MB per cell for a ResNet or a
    3D U-Net, needed only to resume it); its exported weights and metrics stay. Called only once
    the cell's result is written, so a killed cell still resumes."""
    if not config.keep_checkpoints:
        shutil.rmtree(out / "cells" / cell.id / "run" / "checkpoints", ignore_errors=True)


def _run_cell(config: StudyConfig, cell: Cell, out: Path) -> dict:
    task, encoder = _task(config, cell.task), _encoder(config, cell.encoder)
    if cell.protocol in PROBE_PROTOCOLS:
        return _probe_cell(config, cell, task, encoder, out)
    return _finetune_cell(config, cell, task, encoder, out)


def _finetune_fields(config: StudyConfig, cell: Cell, task: StudyTask, encoder) -> dict:
    """The ClassifyConfig/SegmentConfig fields of a fine-tuning cell."""
    return {
        **config.finetune,
        **_cell_data_fields(config, cell, task),
        "model": encoder.model,
        "init": encoder.init,
        "bootstrap": config.bootstrap,
        "device": config.device,
        "workers": config.workers,
        "progress": False,
    }


def _cell_data_fields(config: StudyConfig, cell: Cell, task: StudyTask) -> dict:
    """What a cell reads and trains on: the task's data fields, the study's split, the cell's
    label subset and seed (shared by fine-tuning and probe cells, so both see the same items)."""
    return {
        **task.options,
        "data": task.data,
        "seed": cell.seed,
        "split_seed": config.split_seed,
        "label_fraction": cell.fraction,
        "label_seed": cell.seed,
        "val_fraction": config.val_fraction,
        "test_fraction": config.test_fraction,
    }


def _finetune_cell(config: StudyConfig, cell: Cell, task: StudyTask, encoder, out: Path) -> dict:
    run_dir = out / "cells" / cell.id / "run"
    fields = _finetune_fields(config, cell, task, encoder)
    resume = (run_dir / "config.yaml").is_file()
    if task.kind == "segment":
        from medfound.tasks.finetune_segment import finetune_segment

        result = finetune_segment(run_dir, overrides=None if resume else fields, resume=resume)
        metrics, kind = result.metrics, "segment"
    else:
        from medfound.tasks.finetune_classify import finetune_classify

        result = finetune_classify(run_dir, overrides=None if resume else fields, resume=resume)
        metrics, kind = result.metrics, result.metrics["kind"]
    if not result.counts["test"]:
        raise ConfigError(f"task {task.name}: no test items (raise test_fraction)")
    figures = {name: metrics[name] for name in METRICS[kind] if isinstance(metrics.get(name), dict)}
    return {
        "cell": cell.id,
        "figures": figures,
        "n_train": result.counts["train"],
        "n_test": result.counts["test"],
        "kind": kind,
    }


def _probe_cell(config: StudyConfig, cell: Cell, task: StudyTask, encoder, out: Path) -> dict:
    from medfound.evaluation.probe import fit_knn, fit_logistic
    from medfound.tasks.classification_report import classification_figures
    from medfound.tasks.label_sources import load_label_table
    from medfound.tasks.probe import read_embeddings
    from medfound.tasks.transfer_run import patient_splits

    settings = _label_settings(config, cell, task)
    table = load_label_table(settings)
    splits = patient_splits(table.patients, settings, given=table.splits)
    ids, vectors, invalid = read_embeddings(_embedding_path(out, task, encoder))
    row_of = {item: i for i, item in enumerate(ids)}
    usable = np.array([item in row_of for item in table.ids])
    if invalid or not usable.all():
        log.warning("%s: %d item(s) without a usable embedding left out", cell.id, (~usable).sum())
    train = np.flatnonzero((splits == "train") & usable)
    test = np.flatnonzero((splits == "test") & usable)
    if not len(test):
        raise ConfigError(f"task {task.name}: no test items (raise test_fraction)")
    X = vectors[[row_of[table.ids[i]] for i in range(len(table)) if usable[i]]]
    index_of = {int(i): n for n, i in enumerate(np.flatnonzero(usable))}
    X_train, X_test = X[[index_of[int(i)] for i in train]], X[[index_of[int(i)] for i in test]]
    k = len(table.classes)
    if cell.protocol == "knn":
        probe = fit_knn(X_train, table.targets[train], table.kind, n_classes=k)
    else:
        groups = table.patients[train]
        probe = fit_logistic(
            X_train, table.targets[train], table.kind, groups, cell.seed, n_classes=k
        )
    scores = probe.predict_scores(X_test)
    report = classification_figures(
        table.targets[test],
        scores,
        table.patients[test],
        table.kind,
        table.classes,
        n_resamples=config.bootstrap,
        seed=cell.seed,
    )
    figures = {n: report[n] for n in METRICS[table.kind] if isinstance(report.get(n), dict)}
    return {
        "cell": cell.id,
        "figures": figures,
        "n_train": len(train),
        "n_test": len(test),
        "kind": table.kind,
    }


def _label_settings(config: StudyConfig, cell: Cell, task: StudyTask):
    """A ClassifyConfig carrying the task's data fields and this cell's split and label subset."""
    from medfound.tasks.classify_config import ClassifyConfig

    fields = _cell_data_fields(config, cell, task)
    names = set(ClassifyConfig.__dataclass_fields__)
    return from_dict(ClassifyConfig, {k: v for k, v in fields.items() if k in names}, task.name)


def _embedding_path(out: Path, task: StudyTask, encoder) -> Path:
    return out / "embeddings" / f"{task.name}__{encoder.name}.parquet"


def _probe_pairs(config: StudyConfig) -> list[tuple[StudyTask, object]]:
    """The (task, encoder) pairs whose frozen embeddings the probe cells need."""
    if not set(config.protocols) & set(PROBE_PROTOCOLS):
        return []
    return [(t, e) for t in config.tasks if t.kind == "classify" for e in config.encoders]


def prepare_embeddings(config: StudyConfig, out: Path, rank: int = 0, world: int = 1) -> None:
    """Embed each (task, encoder) of the probes once, before any probe cell: pair i on rank
    i % world (`embed` resumes an interrupted file); a `.done` marker says a file is complete, and
    every rank waits for all of them (two cells must never write one file)."""
    from medfound.tasks.embed import EmbedOptions, embed
    from medfound.tasks.label_sources import load_label_table
    from medfound.tasks.transfer_run import load_encoder

    pairs = _probe_pairs(config)
    for index, (task, encoder) in enumerate(pairs):
        path = _embedding_path(out, task, encoder)
        done = path.with_suffix(".done")
        if index % world != rank or done.is_file():
            continue
        table = load_label_table(_label_settings(config, Cell(task.name, "", "", 1.0, 0), task))
        options = EmbedOptions(
            batch_size=config.embed_batch_size,
            device=config.device,
            workers=config.workers,
            image_size=task.options.get("image_size"),
            preset=task.options.get("preset"),
            progress=False,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        log.info("embedding task %s with encoder %s", task.name, encoder.name)
        with _one_process():
            model = load_encoder(encoder.model, encoder.init, config.split_seed)
            embed(table.ids, path, model=model, options=options)
        atomic_write(done, lambda tmp: tmp.write_text("complete\n"))
    _wait_until([_embedding_path(out, t, e).with_suffix(".done") for t, e in pairs])


def _wait_until(paths: list[Path], timeout_s: float = 7 * 24 * 3600) -> None:
    deadline = time.monotonic() + timeout_s
    while missing := [p for p in paths if not p.is_file()]:
        if time.monotonic() > deadline:
            raise ConfigError(f"study: never written: {missing[:3]}")
        time.sleep(2)


def _task_items(config: StudyConfig, task: StudyTask):
    """(item ids, patients, splits the data give or None) of a task, read as its cells read it."""
    if task.kind == "segment":
        from medfound.tasks.finetune_segment import SegmentConfig, find_cases

        names = set(SegmentConfig.__dataclass_fields__)
        fields = {k: v for k, v in {**task.options, "data": task.data}.items() if k in names}
        table = find_cases(from_dict(SegmentConfig, fields, task.name))
        return table.ids, table.patients, None
    from medfound.tasks.label_sources import load_label_table

    table = load_label_table(_label_settings(config, Cell(task.name, "", "", 1.0, 0), task))
    return table.ids, table.patients, table.splits


def write_subsets(out: Path, config: StudyConfig) -> None:
    """STUDY_DIR/subsets.csv: per task, seed and item its split and, per fraction, whether it is
    in that training subset (`in_<fraction>`): what every encoder of the study was given."""
    from medfound.evaluation.label_fractions import fraction_column
    from medfound.tasks.transfer_run import patient_splits

    fractions = sorted(config.fractions)
    names = [fraction_column(f) for f in fractions]
    rows = []
    for task in config.tasks:
        ids, patients, given = _task_items(config, task)
        for seed in config.seeds:
            masks, base = [], None
            for fraction in fractions:
                settings = _label_settings(config, Cell(task.name, "", "", fraction, seed), task)
                splits = patient_splits(patients, settings, given=given)
                if base is None:
                    base = np.where(splits == "unused", "train", splits)
                masks.append(splits == "train")
            for i, item in enumerate(ids):
                row = {"task": task.name, "seed": seed, "id": item, "patient": patients[i]}
                row["split"] = base[i]
                row |= {name: int(mask[i]) for name, mask in zip(names, masks, strict=True)}
                rows.append(row)
    _write_csv(out / SUBSETS_FILE, ["task", "seed", "id", "patient", "split", *names], rows)


# --- aggregation ------------------------------------------------------------------------------


def aggregate(out: Path, config: StudyConfig) -> None:
    """results.csv, summary.csv, comparisons.csv and label_saving.csv from the cells' results."""
    from medfound.evaluation.comparison import label_saving, paired_comparison, summarise_seeds

    rows = []
    for cell in cells_of(config):
        result = json.loads((out / "cells" / cell.id / RESULT_FILE).read_text())
        for metric, figure in result["figures"].items():
            rows.append(
                {
                    "task": cell.task,
                    "encoder": cell.encoder,
                    "protocol": cell.protocol,
                    "fraction": cell.fraction,
                    "seed": cell.seed,
                    "metric": metric,
                    "value": figure["value"],
                    "ci_low": figure["low"],
                    "ci_high": figure["high"],
                    "n_train": result["n_train"],
                    "n_test": result["n_test"],
                }
            )
    _write_csv(out / RESULTS_FILE, RESULT_COLUMNS, rows)

    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        key = (row["task"], row["encoder"], row["protocol"], row["fraction"], row["metric"])
        groups.setdefault(key, []).append(row)
    summary = []
    for (task, encoder, protocol, fraction, metric), members in groups.items():
        defined = [r for r in members if r["value"] is not None]
        values = [r["value"] for r in defined]
        single = (defined[0]["ci_low"], defined[0]["ci_high"]) if defined else (None, None)
        mean, sd, low, high = summarise_seeds(values, ci_single=single) if values else (None,) * 4
        summary.append(
            {
                "task": task,
                "encoder": encoder,
                "protocol": protocol,
                "fraction": fraction,
                "metric": metric,
                "n_seeds": len(values),
                "mean": mean,
                "sd": sd,
                "ci_low": low,
                "ci_high": high,
            }
        )
    _write_csv(out / SUMMARY_FILE, list(summary[0]) if summary else [], summary)

    comparisons, savings = [], []
    by_seed = {
        (r["task"], r["encoder"], r["protocol"], r["fraction"], r["metric"], r["seed"]): r["value"]
        for r in rows
    }
    names = [e.name for e in config.encoders]
    settings = {(r["task"], r["protocol"], r["metric"]) for r in rows}
    for task, protocol, metric in sorted(settings):
        for fraction in sorted(config.fractions):
            for i, a in enumerate(names):
                for b in names[i + 1 :]:
                    pairs = [
                        (by_seed.get((task, a, protocol, fraction, metric, s)),
                         by_seed.get((task, b, protocol, fraction, metric, s)))
                        for s in config.seeds
                    ]  # fmt: skip
                    pairs = [(x, y) for x, y in pairs if x is not None and y is not None]
                    if not pairs:
                        continue
                    test = paired_comparison([x for x, _ in pairs], [y for _, y in pairs])
                    comparisons.append(
                        {
                            "task": task,
                            "protocol": protocol,
                            "fraction": fraction,
                            "metric": metric,
                            "encoder_a": a,
                            "encoder_b": b,
                            "n_seeds": test["n"],
                            "mean_diff": test["mean_diff"],
                            "p_value": test["p_value"],
                            "test": test["test"],
                        }
                    )
        means = {
            (s["encoder"], s["fraction"]): s["mean"]
            for s in summary
            if (s["task"], s["protocol"], s["metric"]) == (task, protocol, metric)
        }
        reference_full = means.get((config.reference, 1.0))
        if reference_full is None:
            continue
        for encoder in names:
            if encoder == config.reference:
                continue
            fractions = sorted(config.fractions)
            curve = [means.get((encoder, f)) for f in fractions]
            smallest, saving = label_saving(fractions, curve, reference_full)
            savings.append(
                {
                    "task": task,
                    "protocol": protocol,
                    "metric": metric,
                    "encoder": encoder,
                    "reference": config.reference,
                    "reference_full": reference_full,
                    "smallest_fraction": smallest,
                    "saving": saving,
                }
            )
    comparison_columns = [
        "task", "protocol", "fraction", "metric", "encoder_a", "encoder_b", "n_seeds",
        "mean_diff", "p_value", "test",
    ]  # fmt: skip
    saving_columns = [
        "task", "protocol", "metric", "encoder", "reference", "reference_full",
        "smallest_fraction", "saving",
    ]  # fmt: skip
    _write_csv(out / COMPARISONS_FILE, comparison_columns, comparisons)
    _write_csv(out / SAVING_FILE, saving_columns, savings)


def _write_csv(path: Path, columns: list[str], rows: list[dict]) -> None:
    def cell(value) -> str:
        if value is None:
            return ""
        return f"{value:.6g}" if isinstance(value, float) else str(value)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([cell(row.get(c)) for c in columns])

    atomic_write(path, write)
