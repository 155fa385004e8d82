"""`medfound restore VOLUME... --weights W --out DIR`: restored scans and anomaly maps."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console
from medfound.errors import skip_message
from medfound.sizes import parse_sizes

console = text_console()


def _parse_roi(text: str | None) -> tuple[int, ...] | None:
    """'64,64,32' -> (64, 64, 32); one number is a cube (or square for 2D models)."""
    if text is None:
        return None
    sizes = parse_sizes(text, "--roi")
    return sizes[0] if len(sizes) == 1 else sizes


@handles_errors
def restore_command(
    volumes: list[Path] = typer.Argument(
        ..., help="Scans: NIfTI, DICOM series folders or files, .npy; folders searched recursively"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder"),
    weights: Path | None = typer.Option(None, "--weights", "-w", help="Local weight file"),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="Restoration model (default: the weight file's card, else unet3d_genesis.chest_ct)",
    ),
    random_init: bool = typer.Option(False, "--random-init", help="Use random weights on purpose"),
    preset: str | None = typer.Option(
        None, "--preset", help="ct, mri or auto (default: the model card's)"
    ),
    roi: str | None = typer.Option(
        None, "--roi", help="Sliding window X,Y,Z (default: the model's input size)"
    ),
    overlap: float = typer.Option(0.5, "--overlap", help="Window overlap in [0, 1)"),
    blend: str = typer.Option("gaussian", "--blend", help="gaussian or constant"),
    batch_size: int = typer.Option(4, "--batch-size", "-b", help="Windows per forward pass"),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda or cuda:N"),
    compat_batchnorm: bool = typer.Option(
        False,
        "--compat-batchnorm",
        help="BatchNorm with batch statistics in eval mode, as the original Genesis code",
    ),
    montage_slices: int = typer.Option(3, "--montage-slices", help="Axial slices in the montage"),
    keep_uids: bool = typer.Option(
        False, "--keep-uids", help="Keep DICOM series UIDs in source ids (default: keyed hashes)"
    ),
) -> None:
    """Restore scans with a restoration model: restored scan, anomaly map, PNG montage."""
    from medfound.tasks.restore import SUMMARY_FILE, restore

    summary = restore(
        [str(p) for p in volumes],
        out,
        model=model,
        weights=weights,
        random_init=random_init,
        preset=preset,
        roi=_parse_roi(roi),
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=device,
        compat_batchnorm=compat_batchnorm,
        montage_slices=montage_slices,
        keep_uids=keep_uids,
    )
    for item in summary.written:
        for path, what in (
            (item.restored, f"restored, {item.restored_units}"),
            (item.anomaly, "anomaly map |input - restored|, [0, 1]"),
            (item.montage, "montage: input, restored, difference"),
        ):
            console.print(f"wrote {path} ({what})", highlight=False, soft_wrap=True)
    random = ", random init" if summary.random_init else ""
    console.print(
        f"restored {len(summary.written)}, skipped {len(summary.skipped)} "
        f"({summary.seconds:.1f} s; model {summary.model}{random}); run record in "
        f"{summary.out_dir / SUMMARY_FILE}",
        highlight=False,
        soft_wrap=True,
    )
    if not summary.ok:
        for source, reason in summary.skipped:
            console.print(
                f"  skipped {skip_message(source, reason)}", highlight=False, soft_wrap=True
            )
        raise typer.Exit(1)
