"""`medfound embed INPUTS... --model NAME --out OUT.parquet`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console
from medfound.errors import skip_message

console = text_console()


@handles_errors
def embed_command(
    inputs: list[Path] = typer.Argument(..., help="Image files, folders (recursive), CSV (path)"),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Model name, see `medfound models` (default: the weight file's card)",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output Parquet file (resumed if present)"),
    weights: Path | None = typer.Option(
        None,
        "--weights",
        "-w",
        help="Local weight file, or a model folder as downloaded from a hub",
    ),
    random_init: bool = typer.Option(False, "--random-init", help="Use random weights on purpose"),
    batch_size: int = typer.Option(8, "--batch-size", "-b"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    workers: int | None = typer.Option(
        None, "--workers", help="Decoding workers (default: half the cores)"
    ),
    pool: str = typer.Option("avg", "--pool", help="avg: vector; none: keep feature maps"),
    preset: str | None = typer.Option(None, "--preset", help="cxr, path, ct, mri or auto"),
    image_size: int | None = typer.Option(None, "--image-size", help="Override the input side"),
    precision: str = typer.Option("fp32", "--precision", help="fp32 or bf16 (autocast)"),
    compile: bool = typer.Option(False, "--compile", help="torch.compile the model"),
    chunk_rows: int = typer.Option(256, "--chunk-rows", help="Rows per crash-safe chunk on disk"),
    keep_uids: bool = typer.Option(
        False,
        "--keep-uids",
        help="Keep DICOM instance/series UIDs in ids (default: keyed hashes, MEDFOUND_UID_SALT)",
    ),
    slices: str = typer.Option(
        "each", "--slices", help="Volumes into 2D models: each, middle or N slices (evenly spaced)"
    ),
    slice_axis: int | None = typer.Option(
        None, "--slice-axis", help="0, 1 or 2 (default: the acquisition axis, largest spacing)"
    ),
    tile_mpp: float | None = typer.Option(
        None,
        "--tile-mpp",
        help="Whole slides: micrometres per pixel of the tiles (default: the model's, else 0.5)",
    ),
    tile_overlap: float = typer.Option(0.0, "--tile-overlap", help="Whole slides: tile overlap"),
    min_tissue: float = typer.Option(
        0.5, "--min-tissue", help="Whole slides: smallest tissue share of a kept tile"
    ),
    slide_mpp: float | None = typer.Option(
        None,
        "--slide-mpp",
        help="Whole slides: level-0 micrometres per pixel (over what slides state)",
    ),
    slide_reader: str = typer.Option(
        "auto",
        "--slide-reader",
        help="Whole slides: auto (tiffslide; OpenSlide for MIRAX and the like), tiffslide or "
        "openslide",
    ),
) -> None:
    """Embed images with a foundation model into a Parquet file, one row per image (per slice for
    volumes given to a 2D model, per tissue tile for whole slides)."""
    from medfound.tasks.embed import EmbedOptions, embed

    options = EmbedOptions(
        batch_size=batch_size,
        device=device,
        workers=workers,
        pool=pool,
        preset=preset,
        image_size=image_size,
        precision=precision,
        compile=compile,
        chunk_rows=chunk_rows,
        keep_uids=keep_uids,
        slices=slices,
        slice_axis=slice_axis,
        tile_mpp=tile_mpp,
        tile_overlap=tile_overlap,
        min_tissue=min_tissue,
        slide_mpp=slide_mpp,
        slide_reader=slide_reader,
    )
    summary = embed(
        [str(p) for p in inputs],
        out,
        model_name=model,
        weights=weights,
        random_init=random_init,
        options=options,
    )
    rate = summary.embedded / summary.seconds if summary.seconds else 0.0
    console.print(
        f"embedded {summary.embedded} ({rate:.1f} img/s), already done {summary.already_done}, "
        f"skipped {len(summary.skipped)}; {summary.total_rows} rows in {summary.out}"
    )
    if not summary.ok:
        for source, reason in summary.skipped:
            console.print(
                f"  skipped {skip_message(source, reason)}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(1)
