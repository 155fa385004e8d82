"""Masks from a fine-tuned segmenter for new images and volumes, on each input's own grid.

Each input is read as training read it (the preset's intensity mapping, no resizing), predicted by
sliding windows of the training patch size, and written as NAME_pred.png (2D: class indices; a
two-class mask as 0/255, as masks are commonly drawn) or NAME_pred.nii.gz (3D, uint8 class indices,
in the input NIfTI's own voxel order and affine; tasks/volume_output.py).
"""

import logging
from pathlib import Path

import numpy as np
import torch

from medfound.data.segmentation import SegmentationCase, read_segmentation_case
from medfound.data.sources import collect_sources
from medfound.engine.distributed import resolve_device
from medfound.errors import ConfigError, MedfoundError
from medfound.files import atomic_write
from medfound.io.presets import get_preset
from medfound.methods.segmentation import WEIGHTS_FILE, load_segmenter
from medfound.methods.sliding_window import sliding_window_predict
from medfound.tasks.volume_output import output_grid, output_names, write_nifti

log = logging.getLogger(__name__)


def predict_masks(run_dir, inputs, out: Path, *, device: str = "auto"):
    """Write one mask per input into `out`; returns a tasks.predict.PredictSummary."""
    from medfound.tasks.predict import PredictSummary

    device = resolve_device(device)
    segmenter, info = load_segmenter(Path(run_dir) / WEIGHTS_FILE)
    segmenter.to(device)
    preset = get_preset(info["preset"])
    sources, problems = collect_sources(inputs)
    series = [s.id for s in sources if s.series]
    if series:
        raise ConfigError(f"DICOM series are not supported for masks yet: {series[:3]}")
    if not sources:
        raise ConfigError(f"no images in {[str(i) for i in inputs]}")
    out.mkdir(parents=True, exist_ok=True)
    summary = PredictSummary(out=out, skipped=list(problems))
    binary = info["num_classes"] == 2
    for source, name in zip(sources, output_names(sources), strict=True):
        case = SegmentationCase(source.id, source.paths, None, source.id)
        try:
            image, _ = read_segmentation_case(case, preset)
            if image.array.shape[0] != info["in_channels"]:
                raise ConfigError(
                    f"{source.id}: {image.array.shape[0]} channels, the segmenter takes "
                    f"{info['in_channels']}"
                )
            if image.array.ndim - 1 != info["spatial_dims"]:
                raise ConfigError(
                    f"{source.id}: a {image.array.ndim - 1}D input for a "
                    f"{info['spatial_dims']}D segmenter"
                )
        except MedfoundError as exc:
            log.warning("skipped %s", exc)
            summary.skipped.append((source.id, str(exc)))
            continue
        with torch.inference_mode():
            tensor = torch.from_numpy(image.array).to(device)
            probabilities = sliding_window_predict(
                segmenter, tensor, info["roi_size"], overlap=info["overlap"]
            )
        labels = probabilities.argmax(0).cpu().numpy().astype(np.uint8)
        if labels.ndim == 2:
            path = out / f"{name}_pred.png"
            _write_png(path, labels * 255 if binary else labels)
        else:
            path = out / f"{name}_pred.nii.gz"
            affine, to_grid, codes = output_grid(image, source)
            classes = ",".join(info["classes"])
            write_nifti(path, to_grid(labels), affine, f"medfound mask: {classes}", codes, np.uint8)
        summary.written.append(path)
        summary.predicted += 1
    return summary


def _write_png(path: Path, labels: np.ndarray) -> None:
    from PIL import Image

    atomic_write(path, lambda tmp: Image.fromarray(labels).save(tmp, format="PNG"))
