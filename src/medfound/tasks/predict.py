"""`medfound predict RUN_DIR INPUTS --out DIR`: a fine-tuned model applied to new files.

A classifier run (RUN_DIR/classifier.safetensors) gives OUT/predictions.csv: one row per image with
its class probabilities and the predicted class (multiclass) or labels above 0.5 (multilabel); a
2D classifier scores a volume by the mean over its slices (`slices` column: how many). A
segmenter run (RUN_DIR/segmenter.safetensors) gives one mask per input, on the input's own grid:
PNG for 2D images, NIfTI with the input's affine for volumes (tasks/predict_masks.py). Unreadable
inputs are reported and skipped.
"""

import csv
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medfound.data.datasets import ImageDataset
from medfound.data.slices import parse_slices
from medfound.data.sources import collect_sources, may_be_volume
from medfound.engine.distributed import resolve_device
from medfound.errors import ConfigError, WeightsError
from medfound.files import atomic_write
from medfound.methods.classification import WEIGHTS_FILE as CLASSIFIER_FILE
from medfound.methods.classification import load_classifier, probabilities
from medfound.tasks.finetune_classify import reading_preset
from medfound.tasks.inference import run_over

log = logging.getLogger(__name__)

PREDICTIONS_FILE = "predictions.csv"


@dataclass
class PredictSummary:
    """What a prediction run wrote."""

    out: Path
    written: list[Path] = field(default_factory=list)
    predicted: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)


def predict(
    run_dir: str | Path,
    inputs: list[str | Path],
    out: str | Path,
    *,
    batch_size: int = 8,
    device: str = "auto",
    workers: int | None = None,
    slices: str | int | None = None,
    slice_axis: int | None = None,
) -> PredictSummary:
    """Apply the model fine-tuned in `run_dir` to `inputs` (files, folders, CSV lists).

    A volume given to a 2D classifier is scored by the mean over its slices: `slices` (each,
    middle or N) along `slice_axis`, by default as the classifier was trained."""
    run_dir, out = Path(run_dir), Path(out)
    if slice_axis not in (None, 0, 1, 2):
        raise ConfigError(f"--slice-axis must be 0, 1 or 2, got {slice_axis}")
    from medfound.methods.segmentation import WEIGHTS_FILE as SEGMENTER_FILE

    if (run_dir / CLASSIFIER_FILE).is_file():
        slicing = {"slices": slices, "slice_axis": slice_axis}
        return _classify(run_dir, inputs, out, batch_size, device, workers, slicing)
    if (run_dir / SEGMENTER_FILE).is_file():
        from medfound.tasks.predict_masks import predict_masks

        return predict_masks(run_dir, inputs, out, device=device)
    raise WeightsError(
        f"{run_dir}: no fine-tuned model here ({CLASSIFIER_FILE} or {SEGMENTER_FILE}); "
        "give the folder of a `medfound finetune` run"
    )


def _sources(inputs, spatial_dims: int):
    sources, problems = collect_sources(inputs, group_series=spatial_dims == 3)
    if not sources:
        raise ConfigError(f"no images in {[str(i) for i in inputs]}")
    return sources, problems


def _classify(run_dir, inputs, out: Path, batch_size, device, workers, slicing) -> PredictSummary:
    device = resolve_device(device)
    classifier, task = load_classifier(run_dir, device=str(device))
    card = classifier.encoder.card
    sources, problems = _sources(inputs, card.spatial_dims)
    shape = card.preprocess_args()
    size = task.get("input_size")
    if size is not None:
        shape["native_size"] = tuple(size) if isinstance(size, list) else size
    # read at the size the classifier was trained at (a 2D size; 3D ones are the model's shape)
    preset = reading_preset(
        task.get("preset") or card.preset, size if isinstance(size, int) else None
    )
    # trained before slicing was recorded: volumes were not read, so "each" is the default now
    slices = parse_slices(slicing["slices"] or task.get("slices") or "each")
    axis = slicing["slice_axis"] if slicing["slice_axis"] is not None else task.get("slice_axis")
    dataset = ImageDataset(sources, preset, **shape, slices=slices, slice_axis=axis)
    kind, classes = task["kind"], task["classes"]

    def forward(images: torch.Tensor) -> torch.Tensor:
        return probabilities(classifier(images), kind)

    volumes = card.spatial_dims == 2 and any(may_be_volume(s) for s in sources)
    result = run_over(
        forward, dataset, batch_size=batch_size, device=device, workers=workers, volumes=volumes
    )
    scores = torch.stack(result.outputs).numpy() if result.outputs else np.zeros((0, len(classes)))
    path = out / PREDICTIONS_FILE
    out.mkdir(parents=True, exist_ok=True)
    counts = [len(item["slices"]) if "slices" in item else None for item in result.items]
    _write_class_predictions(path, result.sources, scores, classes, kind, counts)
    return PredictSummary(
        out=out,
        written=[path],
        predicted=len(result.sources),
        skipped=problems + result.skipped,
    )


def _write_class_predictions(
    path: Path, ids, scores: np.ndarray, classes, kind: str, slice_counts: list
) -> None:
    """id, one probability column per class, the prediction (class, or labels >= 0.5) and, for a
    volume read as slices, how many slices its probabilities are the mean of."""

    def predicted(row: np.ndarray) -> str:
        if kind == "multiclass":
            return classes[int(row.argmax())]
        return ";".join(c for c, p in zip(classes, row, strict=True) if p >= 0.5)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(["id", *classes, "predicted", "slices"])
            for item, row, count in zip(ids, scores, slice_counts, strict=True):
                cells = [item, *(f"{v:.6g}" for v in row), predicted(row)]
                writer.writerow([*cells, "" if count is None else count])

    atomic_write(path, write)
