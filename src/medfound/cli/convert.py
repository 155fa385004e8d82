"""`medfound convert remedis|simclr|genesis SRC --out FILE.safetensors [--model NAME]`."""

from pathlib import Path

import typer

from medfound.cli.errors import handles_errors, text_console

app = typer.Typer(help="Convert released checkpoints into medfound weight files.")
console = text_console()


@app.command("remedis")
@handles_errors
def remedis(
    src: Path = typer.Argument(..., help="SavedModel directory (saved_model.pb + variables/)"),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors file"),
    model: str | None = typer.Option(
        None, "--model", "-m", help="Model name (default: SRC's folder name)"
    ),
    network_input: str = typer.Option(
        "auto",
        "--network-input",
        help="Range the network consumes: auto (decided by running the SavedModel when TensorFlow "
        "is installed, else symmetric), symmetric ([-1, 1]) or unit ([0, 1])",
    ),
) -> None:
    """Convert a REMEDIS / BiT TensorFlow SavedModel, without TensorFlow."""
    from medfound.convert.remedis import convert_remedis

    card = convert_remedis(src, out, model=model, network_input=network_input)
    console.print(f"wrote {out} ({card.name}, input {card.input_contract})")


@app.command("simclr")
@handles_errors
def simclr(
    src: Path = typer.Argument(
        ..., help="TF checkpoint prefix (model.ckpt-N) or SavedModel directory"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors file"),
    model: str | None = typer.Option(
        None,
        "--model",
        "-m",
        help="simclr:r{50,101,152}x{1,2,3,4} (default: inferred from the checkpoint)",
    ),
) -> None:
    """Convert a SimCLR v1/v2 TensorFlow checkpoint (ResNet-v1 + BatchNorm), without TensorFlow."""
    from medfound.convert.simclr import convert_simclr

    card = convert_simclr(src, out, model=model)
    console.print(f"wrote {out} ({card.name}, input {card.input_contract})")


@app.command("genesis")
@handles_errors
def genesis(
    src: Path = typer.Argument(
        ..., help="The original release's checkpoint, e.g. Genesis_Chest_CT.pt"
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output .safetensors file"),
    model: str = typer.Option(
        "unet3d_genesis.chest_ct", "--model", "-m", help="A Genesis 3D U-Net model name"
    ),
) -> None:
    """Convert the original Models Genesis PyTorch checkpoint, checking every tensor by name."""
    from medfound.convert.genesis import convert_genesis

    done = convert_genesis(src, out, model=model)
    prefix = " ('module.' prefix stripped)" if done.stripped_prefix else ""
    console.print(
        f"mapped {done.tensors} tensors of the original Models Genesis checkpoint{prefix} onto "
        f"{done.card.name}, every name and shape checked; wrote {out}"
    )
