"""`medfound probe EMB.parquet --labels LABELS.csv --out RUN_DIR`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console

console = text_console()
stdout = text_console(stderr=False)


@handles_errors
def probe_command(
    embeddings: Path = typer.Argument(..., help="Embeddings Parquet written by `medfound embed`"),
    labels: Path = typer.Option(
        ..., "--labels", "-l", help="Label CSV: path, label column(s), optional patient, split"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (new or empty)"),
    label_columns: str | None = typer.Option(
        None,
        "--label-columns",
        help="Comma-separated label columns (default: all but path, patient, split); one column "
        "is multiclass, several multilabel",
    ),
    classifier: str = typer.Option("both", "--classifier", help="logistic, knn or both"),
    seed: int = typer.Option(0, "--seed", help="Seed of splits, CV folds and bootstrap"),
    bootstrap: int = typer.Option(
        1000, "--bootstrap", help="Patient-level bootstrap resamples (0: no intervals)"
    ),
    k: int = typer.Option(20, "--k", help="Neighbours of the k-NN probe"),
    folds: int = typer.Option(5, "--folds", help="Cross-validation folds choosing C"),
) -> None:
    """Linear probe (logistic regression, C by cross-validation) and k-NN on frozen embeddings,
    fitted on train (+ val), reported on test with patient-level bootstrap 95% intervals."""
    from medfound.evaluation.tables import class_table
    from medfound.tasks.probe import ProbeOptions, run_probe

    columns = None
    if label_columns is not None:
        columns = [c.strip() for c in label_columns.split(",") if c.strip()]
    options = ProbeOptions(
        label_columns=columns,
        classifier=classifier,  # type: ignore[arg-type]
        seed=seed,
        n_bootstrap=bootstrap,
        k=k,
        folds=folds,
    )
    result = run_probe(embeddings, labels, out, options)
    counts = result.metrics["counts"]
    for name in result.metrics["classifiers"]:
        title = f"{name} probe on the test split ({counts['per_split']['test']['items']} items)"
        stdout.print(class_table(result.classifier_metrics(name), title))
        for note in result.metrics["classifiers"][name]["notes"]:
            console.print(f"  note: {note}", highlight=False, soft_wrap=True)
    unmatched = result.metrics["unmatched"]
    left_out = ", ".join(
        f"{what.replace('_', ' ')}: {entry['count']}"
        for what, entry in unmatched.items()
        if entry["count"]
    )
    per_split = ", ".join(f"{s} {v['items']}" for s, v in counts["per_split"].items())
    console.print(
        f"used {counts['used']} items of {counts['patients']} patients ({per_split})"
        + (f"; left out: {left_out}" if left_out else "")
        + f" ({result.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"wrote {result.files['metrics']}", highlight=False, soft_wrap=True)
    for key in sorted(result.files):
        if key != "metrics":
            console.print(f"wrote {result.files[key]}", highlight=False, soft_wrap=True)
