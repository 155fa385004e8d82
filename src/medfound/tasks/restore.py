"""`medfound restore`: whole scans through a restoration network -> restored scan, anomaly map, montage.

Models Genesis learns to restore corrupted sub-volumes; run on an intact scan, what it cannot reproduce,
|input - restored|, is the unsupervised anomaly map of the Genesis paper. Scans of any size go through
the network with MONAI's `sliding_window_inference`: the model's cube is the window, overlapping windows
are blended (Gaussian by default), and a scan smaller than the cube is padded and cropped back as MONAI
does. Scans run at their own resolution (no resampling, no resizing), so every output overlays its input
voxel for voxel.

Outputs per input, named after it: `<name>_restored.nii.gz`, `<name>_anomaly.nii.gz` (both with the
input's voxel grid: a NIfTI input's own orientation and affine, otherwise the RAS+ grid the readers
give) and `<name>_montage.png` (a few axial slices: input, restored, difference), plus `restore.json`
with the settings and what was written. Every file is written atomically.
"""

import contextlib
import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from medfound import __version__
from medfound.data.sources import ImageSource, collect_sources
from medfound.engine.distributed import resolve_device
from medfound.errors import ConfigError, ImageReadError, skip_message
from medfound.files import atomic_write
from medfound.io.image import MedicalImage
from medfound.io.presets import Preset, get_preset, resolve_auto, to_unit_range
from medfound.io.readers import read_image
from medfound.methods.restoration import RestorationModel
from medfound.models import FoundationModel, load_model
from medfound.models.unet3d import use_batch_statistics
from medfound.privacy import uid_policy
from medfound.tasks.volume_output import output_grid, output_names, write_nifti

if TYPE_CHECKING:
    from PIL import Image

log = logging.getLogger(__name__)

DEFAULT_MODEL = "unet3d_genesis.chest_ct"
BLENDS = ("gaussian", "constant")
SUMMARY_FILE = "restore.json"

# Montage geometry: each slice is enlarged by an integer factor (nearest neighbour) to at least
# _MIN_TILE pixels on its short side, tiles sit _GAP pixels apart right of a label column.
_MIN_TILE = 96
_GAP = 4
_LABEL_WIDTH = 72
_BACKGROUND = 40
ROW_LABELS = ("input", "restored", "|difference|")


@dataclass
class RestoredVolume:
    """The outputs written for one input and what their values mean."""

    source: str
    restored: Path
    anomaly: Path
    montage: Path
    shape: tuple[int, ...]
    restored_units: str  # "HU" (a window preset, inverted) or "[0, 1]" (the preset's unit range)
    difference_scale: float  # the |difference| shown as white in the montage
    mean_anomaly: float


@dataclass
class RestoreSummary:
    """What a run did: the outputs per input, the skipped inputs with reasons, the settings."""

    out_dir: Path
    model: str
    weights_sha256: str | None
    random_init: bool
    preset: str
    roi: tuple[int, ...]
    written: list[RestoredVolume] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        """True when nothing was skipped."""
        return not self.skipped


def restore(
    volumes: Iterable[str | Path],
    out_dir: str | Path,
    *,
    model: str | FoundationModel | None = None,
    weights: str | Path | None = None,
    random_init: bool = False,
    preset: str | None = None,
    roi: Sequence[int] | int | None = None,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    device: str = "cpu",
    compat_batchnorm: bool = False,
    montage_slices: int = 3,
    keep_uids: bool = False,
) -> RestoreSummary:
    """Restore every scan in `volumes` (files, DICOM series folders, folders of scans) into `out_dir`.

    `model` is a registered name or a loaded FoundationModel whose `.network` maps [0, 1] input
    (B, 1, *spatial) to its restoration of the same shape; None means the card in a medfound weight
    file, else `unet3d_genesis.chest_ct`. `preset` (default: the card's) maps intensities to [0, 1];
    `roi` is the sliding window (default: the card's input size); `overlap` in [0, 1) and `blend`
    ("gaussian" or "constant") control how windows combine; `batch_size` windows run at a time.
    `compat_batchnorm` reproduces the original Genesis BatchNorm, which normalises with the
    statistics of each batch of windows even in eval mode (outputs then depend on `batch_size`).

    Wrong weights, options or model fail up front (WeightsError, ConfigError); an input that cannot
    be read or has the wrong dimensionality is reported in `summary.skipped` and the others go on.
    """
    started = time.perf_counter()
    _check_options(overlap, blend, batch_size, montage_slices)
    torch_device = resolve_device(device)
    if isinstance(model, FoundationModel):
        if weights is not None:
            raise ConfigError("give either a loaded model or weights to load, not both")
    else:
        name = model or _name_from_weights(weights)
        model = load_model(name, weights, random_init=random_init)
    card = model.card
    if card.in_channels != 1:
        raise ConfigError(
            f"model {card.name!r} takes {card.in_channels} channels; restore runs "
            "single-channel restoration models"
        )
    window = _resolve_roi(roi, card.input_size, card.spatial_dims)
    chosen = get_preset(preset or card.preset)
    # As in training (methods/restoration.py): the card's input normalisation, then the network.
    network = RestorationModel(model).to(torch_device).eval()
    _check_restores(network, window, torch_device, card.name)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"--out {out_dir}: exists and is not a folder")
    summary = RestoreSummary(
        out_dir=out_dir,
        model=card.name,
        weights_sha256=model.weights_sha256,
        random_init=model.random_init,
        preset=chosen.to_json(),
        roi=window,
    )
    uids = uid_policy(keep=keep_uids)
    sources, problems = collect_sources(volumes, group_series=True, uids=uids)
    summary.skipped.extend(problems)
    run = _Run(
        network=network,
        model_name=card.name,
        spatial_dims=card.spatial_dims,
        preset=chosen,
        roi=window,
        overlap=overlap,
        blend=blend,
        batch_size=batch_size,
        device=torch_device,
        montage_slices=montage_slices,
        out_dir=out_dir,
    )
    with _batch_statistics(network, compat_batchnorm):
        for source, name in zip(sources, output_names(sources), strict=True):
            try:
                result = run(read_image(source.target, source.id, uids), source, name)
            except ImageReadError as exc:
                log.warning("skipped %s", skip_message(source.id, str(exc)))
                summary.skipped.append((source.id, str(exc)))
                continue
            summary.written.append(result)
    summary.seconds = time.perf_counter() - started
    settings = {"roi": window, "overlap": overlap, "blend": blend, "batch_size": batch_size}
    _write_summary(summary, settings | {"compat_batchnorm": compat_batchnorm})
    return summary


def restore_tensor(
    network: nn.Module,
    unit: torch.Tensor,
    roi: Sequence[int],
    *,
    overlap: float = 0.5,
    blend: str = "gaussian",
    batch_size: int = 4,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The network's restoration of a whole [0, 1] image (C, *spatial), by sliding windows of `roi`.

    Windows run on `device`; the blended result is assembled on the CPU, so a large scan needs GPU
    memory for `batch_size` windows only. Returns float32 on the CPU, shaped like `unit`.
    """
    from monai.inferers import sliding_window_inference

    with torch.inference_mode():
        restored = sliding_window_inference(
            unit[None].float(),
            roi_size=tuple(roi),
            sw_batch_size=batch_size,
            predictor=network,
            overlap=overlap,
            mode=blend,
            padding_mode="constant",
            cval=0.0,  # the bottom of the unit range: air for CT
            sw_device=torch.device(device),
            device=torch.device("cpu"),
        )
    return torch.as_tensor(restored)[0].float()


def _check_options(overlap: float, blend: str, batch_size: int, montage_slices: int) -> None:
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap must be in [0, 1), got {overlap}")
    if blend not in BLENDS:
        raise ConfigError(f"--blend must be one of {BLENDS}, got {blend!r}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {batch_size}")
    if montage_slices < 1:
        raise ConfigError(f"--montage-slices must be >= 1, got {montage_slices}")


def _name_from_weights(weights: str | Path | None) -> str:
    """The model a medfound weight file names in its card, else the Genesis chest CT model."""
    from medfound.models.weights import card_in_file

    card = card_in_file(weights) if weights is not None else None
    return card["name"] if card and "name" in card else DEFAULT_MODEL


def _resolve_roi(roi, input_size, spatial_dims: int) -> tuple[int, ...]:
    value = roi if roi is not None else input_size
    if isinstance(value, int):
        value = (value,) * spatial_dims
    try:
        window = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        window = ()
    if len(window) != spatial_dims or min(window) < 1:
        raise ConfigError(f"--roi {roi!r}: need {spatial_dims} positive sizes for this model")
    return window


def _check_restores(network: nn.Module, roi: tuple[int, ...], device: torch.device, name: str):
    """One window of zeros through the network: it must run at `roi` and give back that shape.

    A network that needs other sizes (the Genesis U-Net: multiples of 8) or is not a restoration
    network (an encoder) fails here with the reason, before any scan is read.
    """
    probe = torch.zeros((1, 1, *roi), device=device)
    try:
        with torch.inference_mode():
            out = network(probe)
    except (RuntimeError, ValueError) as exc:  # a MedfoundError from the network passes as it is
        raise ConfigError(f"model {name!r} cannot run on windows of {roi} ({exc})") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(probe.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(
            f"model {name!r} is not a restoration network: a window {tuple(probe.shape)} gave {got}"
        )


@contextlib.contextmanager
def _batch_statistics(network: nn.Module, on: bool) -> Iterator[None]:
    """The original Genesis BatchNorm (batch statistics in eval mode) for the run, when asked;
    switched off again afterwards."""
    if not on:
        yield
        return
    use_batch_statistics(network, on=True)
    try:
        yield
    finally:
        use_batch_statistics(network, on=False)


@dataclass(frozen=True)
class _Run:
    """One run's network and settings; called per image, it writes that image's outputs."""

    network: nn.Module
    model_name: str
    spatial_dims: int
    preset: Preset
    roi: tuple[int, ...]
    overlap: float
    blend: str
    batch_size: int
    device: torch.device
    montage_slices: int
    out_dir: Path

    def __call__(self, image: MedicalImage, source: ImageSource, name: str) -> RestoredVolume:
        if image.spatial_dims != self.spatial_dims:
            kind = {2: "a 2D image", 3: "a 3D volume"}
            raise ImageReadError(
                f"{image.source_id}: {kind.get(image.spatial_dims, 'an array')} of shape "
                f"{tuple(image.array.shape[1:])}, but model {self.model_name!r} restores "
                f"{kind.get(self.spatial_dims, f'{self.spatial_dims}D input')}"
            )
        preset = resolve_auto(self.preset, image)
        unit = _grayscale(to_unit_range(image, preset))
        restored = restore_tensor(
            self.network,
            torch.from_numpy(unit),
            self.roi,
            overlap=self.overlap,
            blend=self.blend,
            batch_size=self.batch_size,
            device=self.device,
        ).numpy()[0]
        unit = unit[0]
        anomaly = np.abs(unit - restored)
        if preset.intensity == "window":
            # Inside the window the preset's map is linear, so the restoration reads back in HU.
            lo, hi = preset.window
            restored_values, units = lo + restored * (hi - lo), "HU"
        else:
            restored_values, units = restored, "[0, 1]"
        affine, to_output_grid, codes = output_grid(image, source)
        tag = f"medfound restore {self.model_name}"
        paths = {kind: self.out_dir / f"{name}_{kind}.nii.gz" for kind in ("restored", "anomaly")}
        restored_data = to_output_grid(restored_values)
        write_nifti(paths["restored"], restored_data, affine, f"restored, {units}; {tag}", codes)
        anomaly_data = to_output_grid(anomaly)
        write_nifti(paths["anomaly"], anomaly_data, affine, f"|input-restored|; {tag}", codes)
        scale = difference_scale(anomaly)
        montage = render_montage(unit, restored, anomaly, self.montage_slices, scale)
        montage_path = self.out_dir / f"{name}_montage.png"
        atomic_write(montage_path, lambda tmp: montage.save(tmp, format="PNG"))
        return RestoredVolume(
            source=source.id,
            restored=paths["restored"],
            anomaly=paths["anomaly"],
            montage=montage_path,
            shape=tuple(restored_data.shape),
            restored_units=units,
            difference_scale=scale,
            mean_anomaly=float(anomaly.mean()),
        )


# ITU-R BT.601 luma, as Pillow's "L" conversion: RGB images (X-rays saved as RGB) become grayscale.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def _grayscale(unit: np.ndarray) -> np.ndarray:
    if unit.shape[0] == 3:
        return np.tensordot(_LUMA, unit, axes=1)[None].astype(np.float32)
    return unit


# --- montage --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MontageLayout:
    """Where each tile of the montage lies: rows (input, restored, difference) x slices."""

    tile_height: int
    tile_width: int
    factor: int  # integer enlargement of each slice
    columns: int
    rows: int = len(ROW_LABELS)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the whole image in pixels."""
        width = _LABEL_WIDTH + self.columns * (self.tile_width + _GAP) + _GAP
        height = self.rows * (self.tile_height + _GAP) + _GAP
        return width, height

    def box(self, row: int, column: int) -> tuple[int, int, int, int]:
        """(left, top, right, bottom) of one tile, as PIL's crop takes it."""
        left = _LABEL_WIDTH + _GAP + column * (self.tile_width + _GAP)
        top = _GAP + row * (self.tile_height + _GAP)
        return left, top, left + self.tile_width, top + self.tile_height


def montage_layout(slice_shape: tuple[int, int], columns: int) -> MontageLayout:
    """The layout for displayed slices of `slice_shape` (rows, columns) and `columns` slices."""
    factor = max(1, math.ceil(_MIN_TILE / min(slice_shape)))
    return MontageLayout(slice_shape[0] * factor, slice_shape[1] * factor, factor, columns)


def montage_slices(depth: int, count: int) -> list[int]:
    """`count` axial slice indices spread evenly inside a scan of `depth` slices (fewer if thin)."""
    picks = [min(depth - 1, round((i + 1) * depth / (count + 1))) for i in range(count)]
    return sorted(set(picks))


def display_slice(volume: np.ndarray, index: int | None) -> np.ndarray:
    """An axial slice of an (X, Y, Z) RAS+ volume as radiologists view it: anterior at the top,
    the patient's right on the left; a 2D image (index None) as stored."""
    if index is None:
        return volume
    return volume[::-1, ::-1, index].T


def difference_scale(anomaly: np.ndarray) -> float:
    """The |difference| shown as white: the 99.5th percentile, so a few outliers do not darken
    everything else."""
    return max(float(np.percentile(anomaly, 99.5)), 1e-6)


def render_montage(
    unit: np.ndarray, restored: np.ndarray, anomaly: np.ndarray, count: int, scale: float
) -> "Image.Image":
    """A grayscale PNG-ready image: rows input, restored, |difference| (0..scale -> black..white),
    columns `count` axial slices (one column for a 2D image)."""
    from PIL import Image, ImageDraw

    indices: list[int | None] = montage_slices(unit.shape[2], count) if unit.ndim == 3 else [None]
    layout = montage_layout(display_slice(unit, indices[0]).shape, len(indices))
    canvas = Image.new("L", layout.size, color=_BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    for row, (volume, top) in enumerate(((unit, 1.0), (restored, 1.0), (anomaly, scale))):
        for column, index in enumerate(indices):
            pixels = to_gray(display_slice(volume, index), top)
            pixels = pixels.repeat(layout.factor, axis=0).repeat(layout.factor, axis=1)
            canvas.paste(Image.fromarray(pixels), layout.box(row, column)[:2])
        y = layout.box(row, 0)[1]
        draw.text((_GAP, y), ROW_LABELS[row], fill=255)
    draw.text((_GAP, layout.box(2, 0)[1] + 14), f"0..{scale:.3g}", fill=255)
    return canvas


def to_gray(values: np.ndarray, top: float) -> np.ndarray:
    """[0, top] -> uint8 [0, 255], clipped."""
    return np.round(np.clip(values / top, 0.0, 1.0) * 255.0).astype(np.uint8)


# --- run record -----------------------------------------------------------------------------------


def _write_summary(summary: RestoreSummary, settings: dict) -> None:
    record = {
        "medfound_version": __version__,
        "model": summary.model,
        "weights_sha256": summary.weights_sha256,
        "random_init": summary.random_init,
        "preset": json.loads(summary.preset),
        **settings,
        "written": [
            {
                "source": v.source,
                "restored": v.restored.name,
                "anomaly": v.anomaly.name,
                "montage": v.montage.name,
                "shape": list(v.shape),
                "restored_units": v.restored_units,
                "difference_scale": v.difference_scale,
                "mean_anomaly": v.mean_anomaly,
            }
            for v in summary.written
        ],
        "skipped": [{"source": s, "reason": r} for s, r in summary.skipped],
        "seconds": round(summary.seconds, 3),
    }
    text = json.dumps(record, indent=2, default=list) + "\n"
    atomic_write(summary.out_dir / SUMMARY_FILE, lambda tmp: tmp.write_text(text))
