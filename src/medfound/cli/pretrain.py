"""`medfound pretrain simclr --data SOURCE --out RUN_DIR [options]`."""

from pathlib import Path

import typer
from rich.console import Console

from medfound.cli.config_options import config_parameters, with_parameters
from medfound.cli.errors import handles_errors
from medfound.errors import skip_message
from medfound.tasks.simclr_config import SimCLRConfig

app = typer.Typer(help="Pretrain a foundation model on unlabeled images.")
console = Console(stderr=True)


def simclr(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, checkpoints, encoder)"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (fields as below)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly"),
    **fields,
) -> None:
    """SimCLR pretraining (REMEDIS's contrastive stage); writes RUN_DIR/encoder.safetensors."""
    from medfound.tasks.pretrain import pretrain_simclr

    overrides = {name: value for name, value in fields.items() if value not in (None, [])}
    summary = pretrain_simclr(out, config_file=config, overrides=overrides, resume=resume)
    loss = summary.last_metrics.get("loss")
    rate = summary.images / summary.seconds if summary.seconds else 0.0
    console.print(
        f"steps {summary.start_step} -> {summary.step} of {summary.total_steps} "
        f"({rate:.1f} img/s)" + (f", last loss {loss:.4f}" if loss is not None else ""),
        highlight=False,
    )
    for path in summary.exported:
        console.print(f"encoder: {path}", highlight=False)
    if summary.skipped:
        console.print(f"skipped {len(summary.skipped)} unreadable item(s):", highlight=False)
        for source, reason in summary.skipped.items():
            console.print(f"  {skip_message(source, reason)}", highlight=False, soft_wrap=True)


# Every field of SimCLRConfig is an option (generated: cli/config_options.py).
_SHORT = {"data": "-d", "model": "-m", "batch_size": "-b"}
simclr = app.command("simclr")(
    handles_errors(with_parameters(simclr, config_parameters(SimCLRConfig, short=_SHORT)))
)
