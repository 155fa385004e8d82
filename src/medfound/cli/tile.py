"""`medfound tile SLIDE... --out TILES.parquet|DIR`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console

console = text_console()


@handles_errors
def tile_command(
    slides: list[Path] = typer.Argument(..., help="Whole-slide images (SVS, NDPI, pyramidal TIFF)"),
    out: Path = typer.Option(
        ..., "--out", "-o", help="TILES.parquet (coordinates) or a folder (tile PNGs)"
    ),
    mpp: float = typer.Option(0.5, "--mpp", help="Micrometres per pixel of the tiles"),
    tile_size: int = typer.Option(224, "--tile-size", help="Tile side in pixels"),
    overlap: float = typer.Option(0.0, "--overlap", help="Share of a tile that overlaps the next"),
    min_tissue: float = typer.Option(
        0.5, "--min-tissue", help="Smallest share of tissue in a kept tile"
    ),
    slide_mpp: float | None = typer.Option(
        None, "--slide-mpp", help="Level-0 micrometres per pixel (over what slides state)"
    ),
    slide_reader: str = typer.Option(
        "auto",
        "--slide-reader",
        help="auto (tiffslide; OpenSlide for MIRAX and the like), tiffslide or openslide",
    ),
) -> None:
    """Tile whole slides on their tissue: coordinates (Parquet) or tile PNGs, and a thumbnail
    per slide with the tissue and the grid drawn; resumable per slide."""
    from medfound.data.tiles import TileOptions
    from medfound.tasks.tile import tile_slides

    options = TileOptions(mpp, tile_size, overlap, min_tissue, slide_mpp, slide_reader)
    summary = tile_slides(slides, out, options)
    console.print(
        f"{summary.tiles} tiles from {summary.slides_done} slides "
        f"({summary.slides_reused} done earlier) -> {out} ({summary.seconds:.1f} s)",
        soft_wrap=True,
    )
    for source, reason in summary.skipped:
        console.print(f"skipped {source}: {reason}", soft_wrap=True)
    if summary.skipped:
        raise typer.Exit(1)
