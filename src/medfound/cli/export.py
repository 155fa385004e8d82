"""`medfound export NAME --weights FILE --format onnx|torchscript|safetensors --out PATH`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console

console = text_console()


@handles_errors
def export_command(
    name: str = typer.Argument(..., help="Model name (see `medfound models`)"),
    out: Path = typer.Option(..., "--out", "-o"),
    fmt: str = typer.Option("onnx", "--format", "-f", help="onnx, torchscript or safetensors"),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="Local weight file"),
    random_init: bool = typer.Option(False, "--random-init", help="Export random weights"),
    image_size: int | None = typer.Option(None, "--image-size", help="Example input side"),
) -> None:
    """Export a model that returns the pooled embedding and the per-stage feature maps."""
    from medfound.models import load_model
    from medfound.tasks.export import export_model

    model = load_model(name, weights, random_init=random_init)
    path = export_model(model, out, fmt, image_size=image_size)
    console.print(f"wrote {fmt} to {path}")
