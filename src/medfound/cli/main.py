"""The `medfound` command."""

from pathlib import Path

import typer

from medfound.cli import convert, finetune, models, pretrain
from medfound.cli.embed import embed_command
from medfound.cli.errors import handles_errors
from medfound.cli.example_data import example_data_command
from medfound.cli.export import export_command
from medfound.cli.plot_embeddings import plot_embeddings_command
from medfound.cli.predict import predict_command
from medfound.cli.probe import probe_command
from medfound.cli.report import report_command
from medfound.cli.restore import restore_command
from medfound.cli.study import study_command
from medfound.cli.tile import tile_command

app = typer.Typer(
    help="medfound: medical-imaging foundation models (embed, pretrain, transfer, convert).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(models.app, name="models")
app.add_typer(convert.app, name="convert")
app.add_typer(pretrain.app, name="pretrain")
app.add_typer(finetune.app, name="finetune")
app.command("embed")(embed_command)
app.command("export")(export_command)
app.command("restore")(restore_command)
app.command("predict")(predict_command)
app.command("probe")(probe_command)
app.command("example-data")(example_data_command)
app.command("study")(study_command)
app.command("report")(report_command)
app.command("tile")(tile_command)
app.command("plot-embeddings")(plot_embeddings_command)


@app.command("demo")
@handles_errors
def demo_command(
    out: Path = typer.Option(Path("demo_out"), "--out", "-o", help="Folder for inputs and outputs"),
    smoke: bool = typer.Option(False, "--smoke", help="A few steps of everything (a minute)"),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or cuda:N"),
) -> None:
    """Pretrain (SimCLR 2D, Models Genesis 3D), then transfer with few labels against scratch, on
    real images shipped in scikit-image, nilearn and pydicom; prints the tables, writes reports."""
    from medfound.tasks.demo import FULL, NOTICE, SMOKE, run_demo

    result = run_demo(out, SMOKE if smoke else FULL, device=device)
    for name, table in result.tables.items():
        typer.echo(f"\n{table}\nreport: {result.studies[name] / 'report.html'}")
    typer.echo(f"\nembedding map (SimCLR encoder, PCA): {result.embedding_map}")
    typer.echo(f"pretrained encoders: {', '.join(str(p) for p in result.encoders.values())}")
    typer.echo(f"\nnote: {NOTICE}")


@app.callback(invoke_without_command=True)
def root(
    version: bool = typer.Option(False, "--version", help="Print the version and exit"),
) -> None:
    """medfound: medical-imaging foundation models."""
    if version:
        from medfound import __version__

        typer.echo(__version__)
        raise typer.Exit()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
