"""`medfound finetune classify`: fine-tune an encoder for classification with few labels, then
evaluate it on the held-out test split with patient-level bootstrap intervals.

Labels come from any label source (tasks/label_sources.py); splits are by patient (given by the data,
or drawn with the seed) and written to RUN_DIR/splits.csv. Training runs on the one loop
(engine/trainer.py) with validation on macro AUC every epoch, best weights and early stopping; the best
weights are exported to RUN_DIR/classifier.safetensors and evaluated on the test split:
RUN_DIR/metrics.json, RUN_DIR/roc.png and RUN_DIR/predictions.csv.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medfound.data.labelled import LabelledImageDataset, SliceSampledLabelledDataset
from medfound.data.labels import LabelTable, check_images_exist
from medfound.data.slices import parse_slices
from medfound.data.splits import write_splits
from medfound.engine.distributed import local_rank, resolve_device
from medfound.engine.trainer import TrainSummary, train
from medfound.errors import ConfigError
from medfound.io.presets import Preset, get_preset
from medfound.methods.classification import (
    ClassificationMethod,
    Classifier,
    load_classifier,
    probabilities,
)
from medfound.tasks.classification_report import evaluate_predictions
from medfound.tasks.classify_config import ClassifyConfig
from medfound.tasks.inference import run_over
from medfound.tasks.label_sources import load_label_table
from medfound.tasks.transfer_run import (
    batch_for_subset,
    data_fingerprint,
    is_main_process,
    load_encoder,
    patient_splits,
    provenance,
    resolve_transfer_config,
)

__all__ = ["ClassifyConfig", "ClassifyResult", "finetune_classify"]

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
_PATH_FIELDS = ("data", "image_root", "mimic_metadata", "mimic_split")


@dataclass
class ClassifyResult:
    """A fine-tuning run: its training summary and, on the main process, the test evaluation."""

    training: TrainSummary
    metrics: dict | None = None  # metrics.json's content (None on other ranks)
    counts: dict = field(default_factory=dict)  # items per split


def finetune_classify(
    run_dir: str | Path,
    config: ClassifyConfig | None = None,
    *,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    resume: bool = False,
) -> ClassifyResult:
    """Fine-tune (or with `resume`, continue) into `run_dir`; evaluate the best weights on test."""
    run_dir = Path(run_dir)
    config = resolve_transfer_config(
        ClassifyConfig,
        run_dir,
        config,
        _PATH_FIELDS,
        config_file=config_file,
        overrides=overrides,
        resume=resume,
    )

    table = load_label_table(config)
    check_images_exist(table)
    encoder = load_encoder(config.model, config.init, config.seed)
    if config.rotation_degrees and encoder.card.spatial_dims != 2:
        raise ConfigError("rotation_degrees: rotation is for 2D models; this model is 3D")
    splits = patient_splits(table.patients, config, given=table.splits)
    train_idx, val_idx, test_idx = (np.flatnonzero(splits == s) for s in ("train", "val", "test"))
    if not len(val_idx):
        raise ConfigError("no validation items: raise val_fraction, or give a val split")
    _check_auc_defined(table, val_idx)
    counts = {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)}
    if config.label_fraction < 1:  # training patients whose labels this run leaves unused
        counts["unused"] = int(np.sum(splits == "unused"))
    log.info("items per split: %s (%s)", counts, table.kind)

    preset = reading_preset(config.preset or encoder.card.preset, config.image_size)
    shape = input_shape(encoder.card, config.image_size) | slicing(config)
    # a volume given to a 2D model: training sees one of its chosen slices per visit, validation
    # and test score it by the mean over them
    dataset = SliceSampledLabelledDataset(table, train_idx, preset, seed=config.seed, **shape)
    val_dataset = LabelledImageDataset(table, val_idx, preset, **shape)
    config = batch_for_subset(config, len(train_idx))
    steps_per_epoch = max(len(train_idx) // config.batch_size, 1)
    if config.validate_every is None:  # once per epoch; saved so that a resume validates alike
        config = dataclasses.replace(config, validate_every=steps_per_epoch)

    classifier = Classifier(
        encoder,
        len(table.classes),
        head=config.head,
        zero_init=config.zero_init_head,
        freeze=config.freeze_until,
    )
    method = ClassificationMethod(
        classifier,
        table.kind,
        table.classes,
        class_weights=_class_weights(table, train_idx, config.class_weights),
        augment=config.augment,
        min_crop_scale=config.min_crop_scale,
        rotation_degrees=config.rotation_degrees,
        provenance=provenance(
            config, _PATH_FIELDS, encoder, {"items": len(table), "classes": list(table.classes)}
        ),
        reading={
            "preset": preset.name,
            "input_size": preset.size or shape["native_size"],
            "slices": shape["slices"],
            "slice_axis": shape["slice_axis"],
        },
    )
    summary = train(
        method,
        dataset,
        config,
        run_dir,
        resume=resume,
        data_fingerprint=data_fingerprint(table.ids, table.classes, splits.tolist(), table.targets),
        val_dataset=val_dataset,
    )
    result = ClassifyResult(training=summary, counts=counts)
    if not is_main_process():
        return result  # one process evaluates
    write_splits(run_dir / SPLITS_FILE, table.ids, table.patients, splits)
    if not len(test_idx):
        log.warning("no test items: the run is evaluated on its validation split")
    evaluated = test_idx if len(test_idx) else val_idx
    result.metrics = _evaluate(run_dir, table, evaluated, preset, config, counts)
    return result


def reading_preset(name: str, image_size: int | None) -> Preset:
    """The reading preset `name`, at `image_size` when given: the size asked for must win over the
    preset's own (the path preset's 224 would otherwise be read whatever image_size said)."""
    return get_preset(name, size=image_size) if image_size is not None else get_preset(name)


def input_shape(card, image_size: int | None) -> dict:
    """The model's preprocessing shape, at `image_size` (per side) when given."""
    shape = card.preprocess_args()
    if image_size is not None:
        shape["native_size"] = image_size
    return shape


def slicing(config: ClassifyConfig) -> dict:
    """How volumes are read for a 2D model (LabelledImageDataset's slices and slice_axis)."""
    return {"slices": parse_slices(config.slices), "slice_axis": config.slice_axis}


def _check_auc_defined(table: LabelTable, val_idx: np.ndarray) -> None:
    """Validation scores the macro AUC: some class must have positive and negative items there
    (said before training, not at the first validation)."""
    targets = table.targets[val_idx]
    if table.kind == "multiclass":
        defined = len(np.unique(targets)) > 1
    else:
        defined = any(
            len(np.unique(column[~np.isnan(column)])) > 1 for column in np.atleast_2d(targets).T
        )
    if not defined:
        raise ConfigError(
            f"the {len(val_idx)} validation items have no class with both positive and negative "
            "items, so the validation AUC is undefined: raise val_fraction or add data"
        )


def _class_weights(table: LabelTable, train_idx: np.ndarray, rule: str) -> torch.Tensor | None:
    """'balanced': inverse class frequency in training (multiclass, as scikit-learn's), or the
    negative/positive ratio per label (multilabel: BCE's positive weight)."""
    if rule == "none":
        return None
    targets = table.targets[train_idx]
    k = len(table.classes)
    if table.kind == "multiclass":
        counts = np.bincount(targets, minlength=k).astype(np.float64)
        weights = len(targets) / (k * np.maximum(counts, 1))
    else:
        positive = np.nansum(targets == 1, axis=0).astype(np.float64)
        negative = np.nansum(targets == 0, axis=0).astype(np.float64)
        weights = negative / np.maximum(positive, 1)
    return torch.tensor(weights, dtype=torch.float32)


def _evaluate(
    run_dir: Path, table: LabelTable, indices: np.ndarray, preset, config, counts
) -> dict:
    """The exported (best) classifier on `indices`: metrics with CIs, ROC curves, predictions."""
    device = resolve_device(config.device, local_rank())
    classifier, task = load_classifier(run_dir, device=str(device))
    shape = input_shape(classifier.encoder.card, config.image_size) | slicing(config)
    dataset = LabelledImageDataset(table, indices, preset, **shape)
    kind = task["kind"]

    def forward(images: torch.Tensor) -> torch.Tensor:
        return probabilities(classifier(images), kind)

    out = run_over(
        forward,
        dataset,
        batch_size=config.batch_size,
        device=device,
        workers=config.workers,
        volumes=dataset.holds_volumes,
    )
    rows = np.asarray(out.indices, dtype=np.int64)
    chosen = indices[rows]
    scores = torch.stack(out.outputs).numpy() if out.outputs else np.zeros((0, len(table.classes)))
    return evaluate_predictions(
        run_dir,
        ids=[table.images.item_id(int(i)) for i in chosen],
        targets=table.targets[chosen],
        scores=scores,
        patients=table.patients[chosen],
        kind=kind,
        classes=tuple(task["classes"]),
        n_resamples=config.bootstrap,
        seed=config.seed,
        extra={
            "split_counts": counts,
            "evaluated_split": "test" if counts["test"] else "val",
            "skipped": dict(out.skipped),
        },
    )
