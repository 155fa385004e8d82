"""`medfound study --config STUDY.yaml --out STUDY_DIR`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console

console = text_console()


@handles_errors
def study_command(
    config: Path = typer.Option(..., "--config", "-c", help="Study YAML (tasks, encoders, ...)"),
    out: Path = typer.Option(..., "--out", "-o", help="Study folder (continues where it stopped)"),
) -> None:
    """Label-efficiency study: every task x encoder x protocol x label fraction x seed, resumable;
    results, summary, comparisons, label savings, plots and an HTML report."""
    from medfound.tasks.study import run_study

    summary = run_study(config, out)
    console.print(
        f"{summary.cells} cells: {len(summary.computed)} computed now, {summary.reused} earlier",
        highlight=False,
    )
    if summary.report is not None:  # rank 0, once every cell is in
        from medfound.tasks.study_table import summary_table

        typer.echo(summary_table(out))
        console.print(f"report: {summary.report}", highlight=False)
