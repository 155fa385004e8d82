"""`medfound predict RUN_DIR INPUTS... --out DIR`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console
from medfound.errors import skip_message

console = text_console()


@handles_errors
def predict_command(
    run_dir: Path = typer.Argument(..., help="Folder of a `medfound finetune` run"),
    inputs: list[Path] = typer.Argument(..., help="Images, volumes, folders or CSV lists"),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder"),
    batch_size: int = typer.Option(8, "--batch-size", "-b", help="Images per batch (classifiers)"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    workers: int | None = typer.Option(None, "--workers", help="Decoding workers"),
    slices: str | None = typer.Option(
        None,
        "--slices",
        help="Volumes into 2D classifiers: each, middle or N slices, scored by their mean "
        "(default: as trained)",
    ),
    slice_axis: int | None = typer.Option(
        None, "--slice-axis", help="Axis to slice volumes along (default: as trained)"
    ),
) -> None:
    """Class probabilities (CSV) or masks (PNG/NIfTI on the input's grid) for new files."""
    from medfound.tasks.predict import predict

    summary = predict(
        run_dir,
        inputs,
        out,
        batch_size=batch_size,
        device=device,
        workers=workers,
        slices=slices,
        slice_axis=slice_axis,
    )
    console.print(f"predicted {summary.predicted} input(s) -> {summary.out}", highlight=False)
    for source, reason in summary.skipped:
        console.print(f"  skipped {skip_message(source, reason)}", highlight=False, soft_wrap=True)
    if summary.skipped:
        console.print(f"skipped {len(summary.skipped)} unreadable input(s)", highlight=False)
