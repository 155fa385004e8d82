"""Supervised segmentation as a method for the training loop: flips, Dice + cross-entropy, validation
Dice on whole images by sliding windows, and the exported segmenter file.

The trained module is a `Segmenter` (models/segmenter.py). Training batches are patches with their
masks; validation items are whole images of any size (one per chunk), predicted window by window.
Export writes RUN_DIR/segmenter.safetensors: the whole network, the encoder's card (as every medfound
weight file) and, under `medfound_segmenter`, what `load_segmenter` needs to rebuild it and a
predictor needs to use it (classes, window size, preset).
"""

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from medfound.errors import ConfigError, WeightsError
from medfound.methods.base import MethodOutput
from medfound.methods.sliding_window import sliding_window_predict
from medfound.models.backbones import build_model
from medfound.models.card import ModelCard
from medfound.models.segmenter import MONAI_UNET, Segmenter, build_segmenter
from medfound.models.weights import card_from_metadata, load_state, read_state, save_safetensors

WEIGHTS_FILE = "segmenter.safetensors"
INFO_KEY = "medfound_segmenter"


class SegmentationMethod:
    """Segmentation fine-tuning (see methods/base.py's Method and its validation by score).

    `roi_size`: the training patch and inference window size, each divisible by the segmenter's
    `input_divisor`. `class_names`: one per class, index 0 the background. `provenance` goes into
    the exported file (keep paths out of it: files are made to be shared).
    """

    score_name = "dice"
    higher_is_better = True
    validation_items = 1  # whole images of varying size: one per validation chunk

    def __init__(
        self,
        segmenter: Segmenter,
        *,
        roi_size: Sequence[int],
        num_classes: int,
        class_names: Sequence[str],
        provenance: dict | None = None,
        augment: bool = True,
        preset: str | None = None,
        overlap: float = 0.25,
        sw_batch_size: int = 4,
    ):
        from monai.losses import DiceCELoss

        self.roi_size = tuple(int(s) for s in roi_size)
        check_roi(self.roi_size, segmenter)
        if num_classes != segmenter.num_classes or len(class_names) != num_classes:
            raise ConfigError(
                f"segmentation: {num_classes} classes, {len(class_names)} class names "
                f"({', '.join(class_names)}) and a segmenter of {segmenter.num_classes} outputs "
                "must agree"
            )
        self.model = segmenter
        self.num_classes = num_classes
        self.class_names = tuple(class_names)
        self.provenance = provenance or {}
        self.augment = augment
        self.preset = preset or segmenter.card.preset
        self.overlap = overlap
        self.sw_batch_size = sw_batch_size
        self.criterion = DiceCELoss(to_onehot_y=True, softmax=True)

    def prepare(
        self, images: torch.Tensor, seed: int, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, masks) with each sample flipped at random (probability 1/2 per spatial axis,
        drawn from `seed`), image and mask alike."""
        if targets is None:
            raise ConfigError("segmentation training needs a mask for every training image")
        if targets.shape != images.shape[:1] + images.shape[2:]:
            raise ConfigError(
                f"segmentation batch: masks {tuple(targets.shape)} do not fit images "
                f"{tuple(images.shape)}"
            )
        if not self.augment:
            return images, targets
        return random_flips(images, targets, seed)

    def loss(self, model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> MethodOutput:
        """MONAI's Dice + cross-entropy of the logits (in float32 even under bf16 autocast)."""
        images, targets = inputs
        logits = model(images).float()
        return MethodOutput(loss=self.criterion(logits, targets[:, None]))

    def predict(self, model: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Label maps (B, *spatial) on the CPU, window by window over the whole images (uint8 when
        the classes fit: validation gathers whole volumes)."""
        probabilities = sliding_window_predict(
            model, images, self.roi_size, self.overlap, self.sw_batch_size
        )
        labels = probabilities.argmax(dim=1)
        return labels.to(torch.uint8 if self.num_classes <= 256 else torch.int32).cpu()

    def score(self, outputs: list[torch.Tensor], targets: list[torch.Tensor]) -> float:
        """Mean foreground Dice over the cases (MONAI's compute_dice): per case the mean over the
        foreground classes, a class absent from both truth and prediction counting 1, a class
        predicted but absent from the truth 0."""
        return mean_foreground_dice(outputs, targets, self.num_classes)

    def export(self, model: Segmenter, run_dir: Path) -> list[Path]:
        """RUN_DIR/segmenter.safetensors (see the module docstring)."""
        info = {
            "num_classes": self.num_classes,
            "classes": list(self.class_names),
            "roi_size": list(self.roi_size),
            "overlap": self.overlap,
            "preset": self.preset,
            "in_channels": model.in_channels,
            "spatial_dims": model.spatial_dims,
            "decoder": model.decoder_name,
            "input_divisor": model.input_divisor,
            "provenance": self.provenance,
        }
        path = Path(run_dir) / WEIGHTS_FILE
        # The card says what the file now is (no path: weight files are made to be shared); the
        # starting weights' sha256 is in the provenance.
        card = dataclasses.replace(
            model.card,
            description=f"{model.card.description}; fine-tuned with medfound for segmentation "
            f"of {list(self.class_names)}",
            weights_source=f"medfound finetune segment (provenance in {INFO_KEY})",
        )
        save_safetensors(model, path, card.to_json(), extra={INFO_KEY: json.dumps(info)})
        return [path]


def check_roi(roi_size: tuple[int, ...], segmenter: Segmenter) -> None:
    """Refuse a window/patch size of the wrong rank or not divisible by the segmenter's divisor."""
    dims, divisor = segmenter.spatial_dims, segmenter.input_divisor
    if len(roi_size) != dims:
        raise ConfigError(
            f"patch size {roi_size} has {len(roi_size)} axes; the {segmenter.card.name} "
            f"segmenter is {dims}D"
        )
    bad = [s for s in roi_size if s < 1 or s % divisor]
    if bad:
        example = tuple(max(divisor, s // divisor * divisor) for s in roi_size)
        raise ConfigError(
            f"patch size {roi_size}: every size must be a positive multiple of {divisor} for "
            f"the {segmenter.card.name} segmenter (e.g. {example})"
        )


def random_flips(
    images: torch.Tensor, targets: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each sample flipped along each spatial axis with probability 1/2, the same flips for its
    image (B, C, *spatial) and mask (B, *spatial); the flips are drawn from `seed` on the CPU, so
    they do not depend on the device."""
    generator = torch.Generator().manual_seed(seed)
    spatial = images.ndim - 2
    flips = torch.rand(images.shape[0], spatial, generator=generator) < 0.5
    for axis in range(spatial):
        chosen = flips[:, axis].to(images.device)
        images = torch.where(
            chosen.view(-1, *[1] * (images.ndim - 1)), images.flip(axis + 2), images
        )
        targets = torch.where(
            chosen.view(-1, *[1] * (targets.ndim - 1)), targets.flip(axis + 1), targets
        )
    return images, targets


def mean_foreground_dice(
    predictions: list[torch.Tensor], truths: list[torch.Tensor], num_classes: int
) -> float:
    """Mean over cases of the mean foreground-class Dice (see SegmentationMethod.score); the lists
    hold label-map batches (B, *spatial) in matching order."""
    from monai.metrics import compute_dice

    per_case = []
    for prediction, truth in zip(predictions, truths, strict=True):
        dice = compute_dice(
            prediction.long()[:, None],
            truth.to(prediction.device).long()[:, None],
            include_background=False,
            ignore_empty=False,  # empty in truth: 1 if predicted empty too, else 0 (never NaN)
            num_classes=num_classes,
        )
        per_case.append(dice.mean(dim=1))
    if not per_case:
        raise ConfigError("segmentation score: no case to score")
    return float(torch.cat(per_case).mean())


def load_segmenter(path: str | Path) -> tuple[Segmenter, dict]:
    """The segmenter a SegmentationMethod exported, in eval mode, and its info (num_classes,
    classes, roi_size, overlap (of the sliding windows at validation), preset, in_channels,
    spatial_dims, decoder, input_divisor, provenance, and `card`: the encoder's ModelCard). A file
    that is not a segmenter, or whose tensors do not match the network its metadata describes,
    raises WeightsError naming the keys."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise WeightsError(f"{path}: a segmenter file is a .safetensors file ({WEIGHTS_FILE})")
    state, metadata = read_state(path, nn.Module())
    if INFO_KEY not in metadata:
        raise WeightsError(
            f"{path}: not a segmenter file (no {INFO_KEY} metadata); use the {WEIGHTS_FILE} "
            "written by `medfound finetune segment`"
        )
    try:
        info = json.loads(metadata[INFO_KEY])
        card = ModelCard.from_dict(card_from_metadata(metadata) or {})
        num_classes, in_channels = int(info["num_classes"]), int(info["in_channels"])
    except (ValueError, TypeError, KeyError) as exc:
        raise WeightsError(f"{path}: unreadable segmenter metadata ({exc})") from exc
    if card.family == MONAI_UNET:
        segmenter = build_segmenter(
            MONAI_UNET, num_classes, in_channels=in_channels, spatial_dims=card.spatial_dims
        )
    else:
        encoder = build_model(card)
        encoder.set_input_contract(card.input_mean, card.input_std)
        segmenter = build_segmenter(
            encoder, num_classes, in_channels=in_channels, decoder=info.get("decoder", "unet")
        )
    load_state(segmenter, state, path)
    info["card"] = card
    info["roi_size"] = tuple(info.get("roi_size", ()))
    info.setdefault("overlap", 0.25)  # files written before it was recorded: the default
    return segmenter.eval(), info
