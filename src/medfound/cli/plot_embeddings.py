"""`medfound plot-embeddings EMB.parquet --color-by COLUMN`."""

from pathlib import Path

import typer
from rich.markup import escape

from medfound.cli.errors import handles_errors, text_console

console = text_console()


@handles_errors
def plot_embeddings_command(
    embeddings: Path = typer.Argument(..., help="Embeddings Parquet written by `medfound embed`"),
    color_by: str = typer.Option(
        ...,
        "--color-by",
        "-c",
        help="Column giving each point's colour: one of the Parquet (modality, preset ...) or, "
        "with --labels, one of the label CSV",
    ),
    method: str = typer.Option(
        "pca", "--method", "-m", help=escape("pca (fast), umap or tsne (these need medfound[maps])")
    ),
    labels: Path | None = typer.Option(
        None,
        "--labels",
        "-l",
        help="Label CSV with a path column, joined on the resolved image path",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        help="PNG to write (default: EMB_METHOD_COLUMN.png beside the Parquet); the coordinates "
        "go to the same name with .csv",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the projection and the subsample"),
    max_points: int = typer.Option(
        20_000, "--max-points", help="Plot a random sample of this many items when there are more"
    ),
) -> None:
    """A 2D map of embeddings (features standardised; PCA, UMAP or t-SNE), one point per image,
    coloured by a column, with a legend (or a colour bar for a numeric column of many values)."""
    from medfound.tasks.plot_embeddings import plot_embeddings

    if out is None:
        out = embeddings.with_name(f"{embeddings.stem}_{method}_{_file_part(color_by)}.png")
    result = plot_embeddings(
        embeddings,
        out,
        color_by=color_by,
        method=method,
        labels=labels,
        seed=seed,
        max_points=max_points,
    )
    left_out = [
        f"{what}: {len(items)}"
        for what, items in (
            ("embeddings without a label row", result.embeddings_without_label),
            ("label rows without an embedding", result.labels_without_embedding),
            ("embeddings with NaN or infinite values", result.invalid_embeddings),
        )
        if items
    ]
    sample = f" (sampled from {result.n_available} items, seed {seed})" if result.subsampled else ""
    shown = "a colour bar" if result.colorbar else f"{len(result.legend)} legend entries"
    console.print(
        f"{result.n_points} points{sample}, {shown}"
        + (f"; left out: {', '.join(left_out)}" if left_out else "")
        + f" ({result.seconds:.1f} s)",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"wrote {result.image}", highlight=False, soft_wrap=True)
    console.print(f"wrote {result.coordinates_csv}", highlight=False, soft_wrap=True)


def _file_part(text: str) -> str:
    """`text` with anything but letters, digits, '-' and '_' replaced, for a file name."""
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text) or "column"
