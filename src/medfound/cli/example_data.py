"""`medfound example-data OUT`: labelled example data built from images that ship in packages."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors


@handles_errors
def example_data_command(
    out: Path = typer.Argument(..., help="Folder for the example data (new or empty)"),
) -> None:
    """Write small labelled data sets from real images bundled in nilearn and scikit-image
    (brain tissue slices and volumes, stained histology tiles), for trying probe, finetune and
    predict offline; OUT/README.txt says what they hold."""
    from medfound.tasks.example_data import write_example_data

    data = write_example_data(out)
    for name, path, what in (
        ("tissue_slices", data.tissue_pairs, "2D segmentation pairs"),
        ("ihc_tiles", data.ihc_labels, "classification tiles"),
        ("tissue_volume", data.tissue_volume, "3D segmentation (MSD layout)"),
    ):
        counts = data.counts[name]
        per_class = ", ".join(f"{k} {n}" for k, n in counts["per_class"].items())
        unit = "tiles" if name == "ihc_tiles" else "pixels" if name == "tissue_slices" else "voxels"
        typer.echo(
            f"{path}: {what}, {counts['items']} items of {counts['patients']} patients "
            f"({unit}: {per_class})"
        )
    typer.echo(f"{data.readme}: what they are and how they were made")
