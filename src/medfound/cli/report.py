"""`medfound report STUDY_DIR`: write a study's report.html again from its files alone."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors


@handles_errors
def report_command(
    study_dir: Path = typer.Argument(
        ..., help="Study folder written by `medfound study` (results.csv, summary.csv, ...)"
    ),
    heatmap_fraction: list[float] | None = typer.Option(
        None,
        "--heatmap-fraction",
        help="Label fraction of the tasks x encoders heatmaps, e.g. 0.05 (repeatable; default: "
        "the study's smallest)",
    ),
) -> None:
    """Render STUDY_DIR/report.html (plots under STUDY_DIR/plots) from the study's CSV files and
    study.yaml, without running anything; prints the report's path."""
    from medfound.tasks.study_report import render_report

    path = render_report(study_dir, heatmap_fractions=heatmap_fraction or None)
    typer.echo(str(path))
