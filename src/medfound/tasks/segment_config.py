"""The config of a segmentation fine-tuning run: the loop's settings plus data, model, patches,
inference windows, splits and evaluation.

No torch at import: the CLI builds its options from this class. The loop's defaults follow the
Models Genesis target-task recipe (Adam, lr 1e-3) with MONAI's patch training (patches with a
foreground ratio, Dice + cross-entropy) and validation Dice once per epoch with early stopping.
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from medfound.engine.config import setting
from medfound.engine.loop_config import LoopConfig
from medfound.errors import ConfigError
from medfound.sizes import parse_sizes


@dataclass
class SegmentConfig(LoopConfig):
    """A segmentation fine-tuning run."""

    data: str = setting(
        "",
        "Image/mask pairs (folder of NAME + NAME_mask, or CSV image,mask) or volumes (MSD "
        "folder with dataset.json, imagesTr/labelsTr, or CSV image,label)",
    )
    dims: Literal["auto", "2", "3"] = setting(
        "auto", "2 (image/mask pairs) or 3 (volumes); auto: 3 for dataset.json/imagesTr folders"
    )
    mask_suffix: str = setting("_mask", "2D pairs: the mask of NAME.EXT is NAME<suffix>.EXT")
    instances: Literal["auto", "foreground", "classes"] = setting(
        "auto",
        "Mask values: foreground (> 0 is one class) or classes (kept); auto: 2D "
        "foreground, 3D classes",
    )
    model: str = setting(
        "", "Encoder (any medfound model; unet3d_genesis.* re-headed) or monai_unet"
    )
    init: str = setting("", "Weights to start from (a file as --weights takes), or random")
    preset: str | None = setting(None, "Reading preset (intensities; none: the model's)")
    patch: str | None = setting(
        None, "Training patch and inference window, e.g. 96,96,96 (none: the model's input size)"
    )
    patches_per_image: int = setting(4, "Patches cut from each image read")
    foreground_ratio: float = setting(0.5, "Share of patches centred on a foreground voxel")
    overlap: float = setting(0.25, "Overlap of the sliding windows at inference")
    augment: bool = setting(True, "Random flips of image and mask, on the device")
    val_fraction: float = setting(0.15, "Share of patients for validation")
    test_fraction: float = setting(0.15, "Share of patients for the test")
    split_seed: int | None = setting(None, "Seed of the patient-level split (none: --seed)")
    label_fraction: float = setting(
        1.0, "Share of the training patients whose labels are used (nested per seed)"
    )
    label_seed: int | None = setting(None, "Seed of the label subset (none: --seed)")
    bootstrap: int = setting(1000, "Patient-level bootstrap resamples for the confidence intervals")
    cache_mb: float = setting(1024.0, "Per-worker cache of decoded images, in MB")
    # The loop's defaults for segmentation fine-tuning.
    batch_size: int = setting(8, "Patches per global batch (a multiple of patches-per-image)")
    epochs: int = setting(100, "Passes over the training images")
    optimizer: Literal["lars", "sgd", "adamw"] = setting("adamw", "lars, sgd or adamw")
    lr: float = setting(1e-3, "Learning rate (lr_scaling none: as given)")
    lr_scaling: Literal["linear", "sqrt", "none"] = setting("none", "linear, sqrt or none")
    weight_decay: float = setting(1e-5, "Weight decay (not on norms and biases)")
    warmup_epochs: float = setting(0.0, "Linear warmup, in epochs")
    validate_every: int | None = setting(None, "Steps between validations (none: once per epoch)")
    early_stop_patience: int | None = setting(
        10, "Stop after this many validations without improvement"
    )
    checkpoint_every: int = setting(100, "Steps between checkpoints")

    def validate(self) -> None:
        """The loop's checks (validation once per epoch when not set) plus segmentation's."""
        every = self.validate_every if self.validate_every is not None else 1
        LoopConfig.validate(dataclasses.replace(self, validate_every=every))
        if not self.data:
            raise ConfigError("data: no image/mask pairs or volumes given (--data FOLDER|CSV)")
        if not self.model:
            raise ConfigError("model: name the encoder (--model NAME) or monai_unet")
        if not self.init:
            raise ConfigError(
                "init: name the starting weights (--init FILE), or say --init random to "
                "start from a random initialisation on purpose"
            )
        if self.patch is not None:
            parse_sizes(self.patch, "patch")
        if self.patches_per_image < 1:
            raise ConfigError(f"patches_per_image must be >= 1, got {self.patches_per_image}")
        if self.batch_size % self.patches_per_image:
            raise ConfigError(
                f"batch_size {self.batch_size} must be a multiple of patches_per_image "
                f"{self.patches_per_image}"
            )
        if not 0 <= self.foreground_ratio <= 1:
            raise ConfigError(f"foreground_ratio must be in [0, 1], got {self.foreground_ratio}")
        if not 0 <= self.overlap < 1:
            raise ConfigError(f"overlap must be in [0, 1), got {self.overlap}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave patients for training")
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0, got {self.bootstrap}")
