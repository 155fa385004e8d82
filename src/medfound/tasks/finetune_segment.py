"""`medfound finetune segment`: fine-tune a segmentation network on image/mask pairs (2D) or
image/label volumes (3D), then evaluate it on the held-out test split.

The network is a U-Net on any medfound encoder (models/segmenter.py: smp's decoder on BiT/REMEDIS,
SimCLR or timm encoders; the whole Genesis U-Net re-headed; MONAI's U-Net). Training takes patches
with a foreground ratio (data/seg_patches.py) and MONAI's Dice + cross-entropy; validation and test
run sliding windows over whole images (methods/segmentation.py). Outputs: RUN_DIR/segmenter.safetensors,
splits.csv, metrics.json (Dice, IoU, HD95 per class with patient-level bootstrap intervals),
cases.csv (per case) and overlays.png (a few predicted masks over their images).
"""

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medfound.data.labels import read_csv_header
from medfound.data.seg_patches import SegmentationImageDataset, SegmentationPatchDataset
from medfound.data.segmentation import (
    SegmentationTable,
    check_pairs,
    find_pairs_2d,
    find_volumes_3d,
)
from medfound.data.splits import write_splits
from medfound.engine.distributed import local_rank, resolve_device
from medfound.engine.trainer import TrainSummary, train
from medfound.errors import ConfigError
from medfound.evaluation.bootstrap import bootstrap_figures
from medfound.evaluation.segmentation import segmentation_metrics
from medfound.files import atomic_write
from medfound.io.presets import get_preset
from medfound.methods.segmentation import WEIGHTS_FILE as SEGMENTER_FILE
from medfound.methods.segmentation import SegmentationMethod, load_segmenter
from medfound.methods.sliding_window import sliding_window_predict
from medfound.models.segmenter import MONAI_UNET, build_segmenter
from medfound.sizes import parse_sizes
from medfound.tasks.segment_config import SegmentConfig
from medfound.tasks.transfer_run import (
    batch_for_subset,
    data_fingerprint,
    is_main_process,
    load_encoder,
    patient_splits,
    provenance,
    resolve_transfer_config,
)

__all__ = ["SegmentConfig", "SegmentResult", "finetune_segment"]

log = logging.getLogger(__name__)

SPLITS_FILE = "splits.csv"
METRICS_FILE = "metrics.json"
CASES_FILE = "cases.csv"
OVERLAYS_FILE = "overlays.png"
_PATH_FIELDS = ("data",)


@dataclass
class SegmentResult:
    """A segmentation run: its training summary and, on the main process, the test evaluation."""

    training: TrainSummary
    metrics: dict | None = None
    counts: dict = field(default_factory=dict)


def finetune_segment(
    run_dir: str | Path,
    config: SegmentConfig | None = None,
    *,
    config_file: str | Path | None = None,
    overrides: dict | None = None,
    resume: bool = False,
) -> SegmentResult:
    """Fine-tune (or with `resume`, continue) into `run_dir`; evaluate the best weights on test."""
    run_dir = Path(run_dir)
    config = resolve_transfer_config(
        SegmentConfig,
        run_dir,
        config,
        _PATH_FIELDS,
        config_file=config_file,
        overrides=overrides,
        resume=resume,
    )

    table = find_cases(config)
    check_pairs(table)  # every pair readable, shapes and labels right: before any training
    segmenter, encoder = _segmenter(config, table)
    card = segmenter.card
    patch = _patch(config, card, table.dims)
    splits = patient_splits(table.patients, config)
    train_idx, val_idx, test_idx = (np.flatnonzero(splits == s) for s in ("train", "val", "test"))
    if not len(val_idx):
        raise ConfigError("no validation cases: raise val_fraction, or add data")
    counts = {"train": len(train_idx), "val": len(val_idx), "test": len(test_idx)}
    if config.label_fraction < 1:  # training patients whose labels this run leaves unused
        counts["unused"] = int(np.sum(splits == "unused"))
    log.info("cases per split: %s (%d classes)", counts, len(table.classes))

    preset = get_preset(config.preset or card.preset)
    dataset = SegmentationPatchDataset(
        table,
        train_idx,
        preset,
        patch_size=patch,
        patches_per_item=config.patches_per_image,
        foreground_ratio=config.foreground_ratio,
        seed=config.seed,
        cache_mb=config.cache_mb,
    )
    val_dataset = SegmentationImageDataset(table, val_idx, preset)
    config = batch_for_subset(config, len(train_idx), config.patches_per_image)
    items = config.batch_size // config.patches_per_image
    if config.validate_every is None:  # once per epoch; saved so that a resume validates alike
        config = dataclasses.replace(config, validate_every=max(len(train_idx) // items, 1))
    method = SegmentationMethod(
        segmenter,
        roi_size=patch,
        num_classes=len(table.classes),
        class_names=table.classes,
        provenance=provenance(
            config, _PATH_FIELDS, encoder, {"cases": len(table), "classes": list(table.classes)}
        ),
        augment=config.augment,
        preset=preset.name,
        overlap=config.overlap,
    )
    summary = train(
        method,
        dataset,
        config,
        run_dir,
        resume=resume,
        data_fingerprint=data_fingerprint(table.ids, table.classes, splits.tolist()),
        val_dataset=val_dataset,
    )
    result = SegmentResult(training=summary, counts=counts)
    if not is_main_process():
        return result
    write_splits(run_dir / SPLITS_FILE, table.ids, table.patients, splits)
    if not len(test_idx):
        log.warning("no test cases: the run is evaluated on its validation split")
    evaluated = test_idx if len(test_idx) else val_idx
    result.metrics = evaluate_segmenter(run_dir, table, evaluated, config, counts)
    return result


def find_cases(config: SegmentConfig, allow_unlabelled: bool = False) -> SegmentationTable:
    """The cases `config.data` holds: 2D pairs or 3D volumes (auto: 3D for MSD-style folders and
    CSVs with a label column)."""
    dims = config.dims
    data = Path(config.data)
    if dims == "auto":
        volumes = data.is_dir() and any((data / n).exists() for n in ("dataset.json", "imagesTr"))
        dims = "3" if volumes or _csv_has(data, "label") else "2"
    instances = config.instances if config.instances != "auto" else None
    if dims == "3":
        options = {"instances": instances} if instances else {}
        return find_volumes_3d(data, allow_unlabelled=allow_unlabelled, **options)
    options = {"instances": instances} if instances else {}
    return find_pairs_2d(
        data, mask_suffix=config.mask_suffix, allow_unlabelled=allow_unlabelled, **options
    )


def _csv_has(path: Path, column: str) -> bool:
    if not path.name.lower().endswith((".csv", ".csv.gz")) or not path.is_file():
        return False
    return column in read_csv_header(path)


def _segmenter(config: SegmentConfig, table: SegmentationTable):
    """(the segmentation network, the encoder it starts from or None) for the config's model."""
    classes = len(table.classes)
    if config.model == MONAI_UNET:
        if config.init != "random":
            raise ConfigError("monai_unet has no pretrained weights: use --init random")
        segmenter = build_segmenter(
            MONAI_UNET,
            classes,
            in_channels=table.channels,
            spatial_dims=table.dims,
            seed=config.seed,
        )
        return segmenter, None
    encoder = load_encoder(config.model, config.init, config.seed)
    if encoder.card.spatial_dims != table.dims:
        raise ConfigError(
            f"model {config.model!r} is {encoder.card.spatial_dims}D but the data are {table.dims}D"
        )
    segmenter = build_segmenter(encoder, classes, in_channels=table.channels, seed=config.seed)
    return segmenter, encoder


def _patch(config: SegmentConfig, card, dims: int) -> tuple[int, ...]:
    if config.patch is not None:
        sizes = parse_sizes(config.patch, "patch")
    else:
        size = card.input_size
        sizes = tuple(size) if isinstance(size, tuple | list) else (size,)
    if len(sizes) == 1:
        sizes = sizes * dims
    if len(sizes) != dims:
        raise ConfigError(f"patch {config.patch!r}: {dims} sizes needed for {dims}D data")
    return tuple(int(s) for s in sizes)


def evaluate_segmenter(
    run_dir: Path, table: SegmentationTable, indices: np.ndarray, config, counts: dict
) -> dict:
    """The exported (best) segmenter on the cases at `indices`: per-case Dice/IoU/HD95 (cases.csv),
    their means per class with patient-level bootstrap intervals (metrics.json), overlays.png."""
    device = resolve_device(config.device, local_rank())
    segmenter, info = load_segmenter(run_dir / SEGMENTER_FILE)
    segmenter.to(device)
    preset = get_preset(info["preset"])
    dataset = SegmentationImageDataset(table, indices, preset)
    classes = tuple(info["classes"])
    cases, shown = [], []
    for item_index in range(len(dataset)):
        item = dataset[item_index]
        if "error" in item:
            log.warning("test: skipped %s", item["error"])
            continue
        with torch.inference_mode():
            image = item["tensor"].to(device)
            probabilities = sliding_window_predict(
                segmenter, image, info["roi_size"], overlap=config.overlap
            )
        labels = probabilities.argmax(0).cpu().numpy()
        truth = item["target"].numpy()
        figures = segmentation_metrics(labels, truth, len(classes), item["spacing"], classes)
        case = table.cases[int(indices[item["index"]])]
        cases.append({"id": case.id, "patient": case.patient, **_flat(figures)})
        if len(shown) < 6:
            shown.append((item["tensor"].numpy(), truth, labels))
    if not cases:
        raise ConfigError("no test case could be read")
    report = _summary(cases, classes, config)
    report |= {"split_counts": counts, "evaluated_split": "test" if counts["test"] else "val"}
    text = json.dumps(report, indent=2, sort_keys=True)
    atomic_write(Path(run_dir) / METRICS_FILE, lambda tmp: tmp.write_text(text))
    _write_cases(Path(run_dir) / CASES_FILE, cases)
    from medfound.evaluation.plots import save_mask_overlays

    save_mask_overlays(Path(run_dir) / OVERLAYS_FILE, *zip(*shown, strict=True))
    return report


def _flat(figures: dict) -> dict:
    flat = {}
    for name, values in figures["per_class"].items():
        for key in ("dice", "iou", "hd95"):
            flat[f"{name}/{key}"] = values[key]
    return flat


def _summary(cases: list[dict], classes: tuple[str, ...], config) -> dict:
    """Per class and overall: the mean over cases of Dice, IoU and HD95, with bootstrap intervals
    over patients (HD95's mean over the cases where it is defined)."""
    patients = np.array([c["patient"] for c in cases])
    keys = [k for k in cases[0] if "/" in k]
    values = {k: np.array([np.nan if c[k] is None else c[k] for c in cases], float) for k in keys}
    foreground = classes[1:]

    def statistic(indices: np.ndarray) -> dict:
        out = {}
        for key, column in values.items():
            chosen = column[indices]
            out[key] = float(np.nanmean(chosen)) if np.isfinite(chosen).any() else None
        for metric in ("dice", "iou", "hd95"):
            per_class = [out[f"{name}/{metric}"] for name in foreground]
            defined = [v for v in per_class if v is not None]
            out[f"mean_{metric}"] = float(np.mean(defined)) if defined else None
        return out

    figures = bootstrap_figures(statistic, patients, config.bootstrap, config.seed)
    per_class = {
        name: {m: figures[f"{name}/{m}"].to_dict() for m in ("dice", "iou", "hd95")}
        for name in foreground
    }
    overall = {k: f.to_dict() for k, f in figures.items() if k.startswith("mean_")}
    return {
        "classes": list(classes),
        "cases": len(cases),
        "patients": len(set(patients.tolist())),
        "per_class": per_class,
        **overall,
    }


def _write_cases(path: Path, cases: list[dict]) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(cases[0]))
            writer.writeheader()
            writer.writerows(cases)

    atomic_write(path, write)
