"""`medfound models` and `medfound models show NAME`."""

import re

import typer
from rich.table import Table

from medfound.cli.errors import handles_errors, text_console

app = typer.Typer(help="List the model zoo, or show one model's card.", no_args_is_help=False)
console = text_console(stderr=False)


@app.callback(invoke_without_command=True)
@handles_errors
def list_all(
    ctx: typer.Context,
    pattern: str | None = typer.Option(
        None, "--filter", "-f", help="Shell wildcards on names or aliases, e.g. 'resnetv2_50x1*'"
    ),
    modality: str | None = typer.Option(
        None, "--modality", help="Models whose modality mentions this, e.g. pathology, CT"
    ),
    family: str | None = typer.Option(
        None, "--family", help="Models of one builder family: bit, vit, genesis, genesis2d"
    ),
) -> None:
    """List the registered models (timm:NAME and monai:NAME reach any other)."""
    if ctx.invoked_subcommand is not None:
        return
    from medfound.errors import UnknownModelError
    from medfound.models import list_models

    cards = list_models(pattern)
    if modality:  # a whole word of the card's modality ("CT" is not in "abstract")
        word = re.compile(rf"(?<!\w){re.escape(modality)}(?!\w)", re.IGNORECASE)
        cards = [card for card in cards if word.search(card.modality)]
    if family:
        cards = [card for card in cards if card.family == family]
    if not cards:
        asked = {"name": pattern, "modality": modality, "family": family}
        raise UnknownModelError(
            "no registered model matches "
            + ", ".join(f"{key} {value!r}" for key, value in asked.items() if value)
        )
    table = Table(title="medfound models (plus timm:NAME, monai:NAME)")
    table.add_column("name", no_wrap=True)
    for column in ("family", "modality", "input", "embedding", "preset", "weights from"):
        table.add_column(column)
    for card in cards:
        size = card.input_size
        size = "x".join(map(str, size)) if isinstance(size, tuple) else f"{size}x{size}"
        source = card.weights_source.split(",")[0].split(":")[0].split("(")[0]
        table.add_row(
            card.name,
            card.family,
            card.modality,
            size,
            str(card.embedding_dim),
            card.preset,
            source,
        )
    console.print(table)


@app.command("show")
@handles_errors
def show(
    name: str = typer.Argument(..., help="A registered name, timm:NAME or monai:NAME"),
) -> None:
    """Print one model's card."""
    from medfound.models import get_card
    from medfound.models.registry import aliases_of

    card = get_card(name)
    table = Table(show_header=False, title=card.name)
    table.add_column(style="bold")
    table.add_column()
    from medfound.models.card import EMBEDDINGS

    for key, value in card.to_dict().items():
        table.add_row(key, str(value))
    table.add_row("embedding definition", EMBEDDINGS.get(card.embedding, "-"))
    table.add_row("aliases", ", ".join(aliases_of(card.name)) or "-")
    console.print(table)
