"""`medfound finetune classify|segment --data ... --model NAME --init W --out RUN_DIR [options]`."""

from pathlib import Path

import typer

from medfound.cli.config_options import config_parameters, with_parameters
from medfound.cli.errors import handles_errors, text_console
from medfound.cli.pretrain import report_training
from medfound.tasks.classify_config import ClassifyConfig
from medfound.tasks.segment_config import SegmentConfig

app = typer.Typer(help="Fine-tune an encoder with labels: classification or segmentation.")
console = text_console()


def classify(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, checkpoints, results)"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (fields as below)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly"),
    **fields,
) -> None:
    """Fine-tune an encoder for classification and evaluate it on the test split (metrics.json
    with bootstrap intervals, roc.png, predictions.csv, RUN_DIR/classifier.safetensors)."""
    from medfound.evaluation.tables import class_table
    from medfound.tasks.finetune_classify import finetune_classify

    overrides = {name: value for name, value in fields.items() if value not in (None, [])}
    result = finetune_classify(out, config_file=config, overrides=overrides, resume=resume)
    report_training(result.training)
    if result.metrics is not None:
        split = result.metrics.get("evaluated_split", "test")
        console.print(class_table(result.metrics, f"{split} split ({out})"))


def segment(
    out: Path = typer.Option(..., "--out", "-o", help="Run folder (config, checkpoints, results)"),
    config: Path | None = typer.Option(None, "--config", help="YAML config (fields as below)"),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly"),
    **fields,
) -> None:
    """Fine-tune a segmentation network (U-Net on the encoder) on image/mask pairs or volumes and
    evaluate it on the test split (metrics.json, cases.csv, overlays.png, segmenter.safetensors)."""
    from medfound.evaluation.tables import class_table
    from medfound.tasks.finetune_segment import finetune_segment

    overrides = {name: value for name, value in fields.items() if value not in (None, [])}
    result = finetune_segment(out, config_file=config, overrides=overrides, resume=resume)
    report_training(result.training)
    if result.metrics is not None:
        split = result.metrics.get("evaluated_split", "test")
        console.print(class_table(result.metrics, f"{split} split ({out})"))


_SHORT = {"data": "-d", "model": "-m", "batch_size": "-b"}
classify = app.command("classify")(
    handles_errors(with_parameters(classify, config_parameters(ClassifyConfig, short=_SHORT)))
)

segment = app.command("segment")(
    handles_errors(with_parameters(segment, config_parameters(SegmentConfig, short=_SHORT)))
)
