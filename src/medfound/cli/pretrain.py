"""`medfound pretrain simclr --data SOURCE --out RUN_DIR [options]`."""

from pathlib import Path

import typer

from medfound.cli.config_options import config_parameters, with_parameters
from medfound.cli.errors import handles_errors, text_console
from medfound.errors import skip_message
from medfound.tasks.genesis_config import GenesisConfig
from medfound.tasks.simclr_config import SimCLRConfig

app = typer.Typer(help="Pretrain a foundation model on unlabeled images.")
console = text_console()


def simclr(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, checkpoints, encoder)"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (fields as below)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly"),
    **fields,
) -> None:
    """SimCLR pretraining (REMEDIS's contrastive stage); writes RUN_DIR/encoder.safetensors."""
    from medfound.tasks.pretrain import pretrain_simclr

    overrides = {name: value for name, value in fields.items() if value not in (None, [])}
    report_training(pretrain_simclr(out, config_file=config, overrides=overrides, resume=resume))


def genesis(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, checkpoints, network)"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (fields as below)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly"),
    **fields,
) -> None:
    """Models Genesis restorative pretraining on CT/MRI volumes (or 2D images with --dims 2);
    writes RUN_DIR/genesis.safetensors."""
    from medfound.tasks.pretrain_genesis import pretrain_genesis

    overrides = {name: value for name, value in fields.items() if value not in (None, [])}
    report_training(pretrain_genesis(out, config_file=config, overrides=overrides, resume=resume))


def report_training(summary) -> None:
    """Print what a training run did: steps, rate, validation, weights, skipped items."""
    loss = summary.last_metrics.get("loss")
    rate = summary.images / summary.seconds if summary.seconds else 0.0
    console.print(
        f"steps {summary.start_step} -> {summary.step} of {summary.total_steps} "
        f"({rate:.1f} samples/s)" + (f", last loss {loss:.4f}" if loss is not None else ""),
        highlight=False,
    )
    if summary.stopped_early:
        console.print(
            f"stopped early: no improvement since step {summary.best_step}", highlight=False
        )
    if summary.best_step is not None:
        console.print(f"best validation at step {summary.best_step} (exported)", highlight=False)
    for path in summary.exported:
        console.print(f"weights: {path}", highlight=False)
    if summary.skipped:
        console.print(f"skipped {len(summary.skipped)} unreadable item(s):", highlight=False)
        for source, reason in summary.skipped.items():
            console.print(f"  {skip_message(source, reason)}", highlight=False, soft_wrap=True)


# Every field of SimCLRConfig is an option (generated: cli/config_options.py).
_SHORT = {"data": "-d", "model": "-m", "batch_size": "-b"}
simclr = app.command("simclr")(
    handles_errors(with_parameters(simclr, config_parameters(SimCLRConfig, short=_SHORT)))
)

genesis = app.command("genesis")(
    handles_errors(with_parameters(genesis, config_parameters(GenesisConfig, short=_SHORT)))
)
