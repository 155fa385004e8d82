"""`medfound pretrain simclr --data SOURCE --out RUN_DIR [options]`."""

from pathlib import Path

import typer
from rich.console import Console

from medfound.cli.errors import handles_errors
from medfound.errors import skip_message

app = typer.Typer(help="Pretrain a foundation model on unlabeled images.")
console = Console(stderr=True)


@app.command("simclr")
@handles_errors
def simclr(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, checkpoints, encoder)"),
    data: list[str] | None = typer.Option(
        None, "--data", "-d", help="Folder (recursive), image file or CSV with a `path` column"
    ),
    model: str | None = typer.Option(None, "--model", "-m", help="Backbone (default: bit-m-r50x1)"),
    init: str | None = typer.Option(None, "--init", help="Weights to start from, or 'random'"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (fields as below)"),
    preset: str | None = typer.Option(
        None, "--preset", help="path (224) or cxr (448) (default: path)"
    ),
    batch_size: int | None = typer.Option(
        None, "--batch-size", "-b", help="Global batch (default: 512)"
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="View side (default: preset's)"
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="default: 100"),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Overrides --epochs"),
    lr: float | None = typer.Option(
        None, "--lr", help="Base rate before batch scaling (default: 0.3)"
    ),
    lr_scaling: str | None = typer.Option(
        None, "--lr-scaling", help="linear or sqrt (default: linear)"
    ),
    optimizer: str | None = typer.Option(
        None, "--optimizer", help="lars, sgd or adamw (default: lars)"
    ),
    weight_decay: float | None = typer.Option(None, "--weight-decay", help="default: 1e-6"),
    warmup_epochs: float | None = typer.Option(None, "--warmup-epochs", help="default: 10"),
    temperature: float | None = typer.Option(None, "--temperature", help="NT-Xent (default: 0.1)"),
    precision: str | None = typer.Option(None, "--precision", help="fp32 or bf16 (default: fp32)"),
    clip_grad_norm: float | None = typer.Option(None, "--clip-grad-norm", help="default: off"),
    compile: bool | None = typer.Option(
        None, "--compile/--no-compile", help="torch.compile the model (default: off)"
    ),
    seed: int | None = typer.Option(None, "--seed", help="default: 0"),
    checkpoint_every: int | None = typer.Option(
        None, "--checkpoint-every", help="Steps (default: 500)"
    ),
    log_every: int | None = typer.Option(None, "--log-every", help="Steps (default: 10)"),
    device: str | None = typer.Option(None, "--device", help="auto, cpu, cuda (default: auto)"),
    workers: int | None = typer.Option(None, "--workers", help="Decoding workers per rank"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly"),
) -> None:
    """SimCLR pretraining (REMEDIS's contrastive stage); writes RUN_DIR/encoder.safetensors."""
    from medfound.tasks.pretrain import pretrain_simclr

    overrides = {
        "data": data or None,
        "model": model,
        "init": init,
        "preset": preset,
        "batch_size": batch_size,
        "image_size": image_size,
        "epochs": epochs,
        "max_steps": max_steps,
        "lr": lr,
        "lr_scaling": lr_scaling,
        "optimizer": optimizer,
        "weight_decay": weight_decay,
        "warmup_epochs": warmup_epochs,
        "temperature": temperature,
        "precision": precision,
        "clip_grad_norm": clip_grad_norm,
        "compile": compile,
        "seed": seed,
        "checkpoint_every": checkpoint_every,
        "log_every": log_every,
        "device": device,
        "workers": workers,
    }
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
