"""The config of a classification fine-tuning run: the loop's settings plus data, labels, model,
freezing, head, augmentation, splits and evaluation.

No torch at import: the CLI builds its options from this class (cli/config_options.py). The loop's
defaults are a fine-tuning recipe after BiT's HyperRule and REMEDIS (SGD with momentum 0.9, no
weight decay, zero-initialised head, crop and flip only), at a batch a single GPU holds; validation
once per epoch on macro AUC, with early stopping after 5 validations without improvement.
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from medfound.engine.config import setting
from medfound.engine.loop_config import LoopConfig
from medfound.errors import ConfigError

DATA_FORMATS = ("auto", "csv", "folders", "chexpert", "mimic", "pcam")


@dataclass
class ClassifyConfig(LoopConfig):
    """A classification fine-tuning run."""

    data: str = setting(
        "", "Label CSV, folder of class folders, CheXpert CSV, MIMIC label CSV, PCam folder"
    )
    format: Literal["auto", "csv", "folders", "chexpert", "mimic", "pcam"] = setting(
        "auto", "How --data is laid out (auto: from the folder or the CSV's columns)"
    )
    label_columns: list[str] = setting(list, "CSV label columns (none: all but path/patient/split)")
    kind: Literal["auto", "multiclass", "multilabel"] = setting(
        "auto", "auto: one label column -> multiclass (softmax), several -> multilabel (sigmoid)"
    )
    observations: list[str] = setting(
        list, "CheXpert/MIMIC observations (none: the 5 of CheXpert's competition)"
    )
    uncertain: Literal["ignore", "ones", "zeros"] = setting(
        "ignore", "CheXpert/MIMIC uncertain (-1) labels: ignore (masked), ones or zeros"
    )
    blank: Literal["negative", "ignore"] = setting(
        "negative", "CheXpert/MIMIC blank labels: negative (0) or ignore (masked)"
    )
    views: list[str] = setting(
        list, "CheXpert: frontal|lateral|all (none: frontal); MIMIC: view positions (none: PA, AP)"
    )
    image_root: str | None = setting(
        None, "CheXpert: folder the CSV's paths start from; MIMIC: folder holding files/"
    )
    mimic_metadata: str | None = setting(
        None, "MIMIC-CXR-JPG metadata CSV (mimic-cxr-2.0.0-metadata.csv)"
    )
    mimic_split: str | None = setting(None, "MIMIC-CXR-JPG split CSV (optional)")
    model: str = setting("", "Encoder: any medfound model name (see `medfound models`)")
    init: str = setting(
        "", "Weights to start from (a file as --weights takes), or random (said out loud)"
    )
    preset: str | None = setting(None, "Reading preset (none: the model's)")
    image_size: int | None = setting(None, "Input side (none: the model's native size)")
    slices: str = setting(
        "each",
        "Volumes into 2D models: each, middle or N slices; training draws one of them per visit, "
        "evaluation scores a volume by the mean over them",
    )
    slice_axis: int | None = setting(None, "Axis the volumes are sliced along (none: acquisition)")
    head: Literal["auto", "linear", "genesis"] = setting(
        "auto", "auto: Genesis head (512->1024->K) for 3D Genesis encoders, else linear"
    )
    zero_init_head: bool = setting(True, "Zero-initialise the last head layer (BiT, REMEDIS)")
    freeze_until: int = setting(
        -1, "Freeze encoder blocks 0..B (REMEDIS fine_tune_after_block): -1 none, 4 all"
    )
    class_weights: Literal["none", "balanced"] = setting(
        "none", "none or balanced (inverse frequency in train)"
    )
    augment: bool = setting(True, "Random flips and a small random crop, on the device")
    min_crop_scale: float = setting(0.8, "Smallest crop side, as a fraction of the image side")
    rotation_degrees: float = setting(
        0.0, "Rotate 2D images by U[-r, r] degrees when > 0 (REMEDIS's fine-tuning rotation)"
    )
    val_fraction: float = setting(
        0.15, "Share of patients for validation (when the data give no splits)"
    )
    test_fraction: float = setting(
        0.15, "Share of patients for the test (when the data give no splits)"
    )
    split_seed: int | None = setting(None, "Seed of the patient-level split (none: --seed)")
    label_fraction: float = setting(
        1.0, "Share of the training patients whose labels are used (nested per seed)"
    )
    label_seed: int | None = setting(None, "Seed of the label subset (none: --seed)")
    bootstrap: int = setting(1000, "Patient-level bootstrap resamples for the confidence intervals")
    # The loop's defaults for fine-tuning.
    batch_size: int = setting(32, "Global batch, summed over ranks")
    epochs: int = setting(30, "Passes over the training split")
    optimizer: Literal["lars", "sgd", "adamw"] = setting("sgd", "lars, sgd or adamw")
    lr: float = setting(0.01, "Learning rate (lr_scaling none: as given)")
    lr_scaling: Literal["linear", "sqrt", "none"] = setting("none", "linear, sqrt or none")
    weight_decay: float = setting(0.0, "Weight decay (not on norms and biases)")
    warmup_epochs: float = setting(0.0, "Linear warmup, in epochs")
    validate_every: int | None = setting(None, "Steps between validations (none: once per epoch)")
    early_stop_patience: int | None = setting(
        5, "Stop after this many validations without improvement"
    )
    checkpoint_every: int = setting(100, "Steps between checkpoints")

    def validate(self) -> None:
        """The loop's checks (validation once per epoch when not set) plus fine-tuning's."""
        every = self.validate_every if self.validate_every is not None else 1
        LoopConfig.validate(dataclasses.replace(self, validate_every=every))
        if not self.data:
            raise ConfigError("data: no labelled data given (--data CSV|FOLDER)")
        if not self.model:
            raise ConfigError("model: name the encoder (--model NAME; see `medfound models`)")
        if not self.init:
            raise ConfigError(
                "init: name the starting weights (--init FILE), or say --init random to "
                "fine-tune from a random initialisation on purpose"
            )
        if not -1 <= self.freeze_until <= 4:
            raise ConfigError(f"freeze_until must be in -1..4, got {self.freeze_until}")
        if not 0 <= self.rotation_degrees <= 180:
            raise ConfigError(f"rotation_degrees must be in [0, 180], got {self.rotation_degrees}")
        if self.rotation_degrees and not self.augment:
            raise ConfigError(
                "rotation_degrees is an augmentation: it needs augment (not --no-augment)"
            )
        if not 0 < self.min_crop_scale <= 1:
            raise ConfigError(f"min_crop_scale must be in (0, 1], got {self.min_crop_scale}")
        for name in ("val_fraction", "test_fraction"):
            if not 0 <= getattr(self, name) < 1:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.val_fraction + self.test_fraction >= 1:
            raise ConfigError("val_fraction + test_fraction must leave patients for training")
        if self.image_size is not None and self.image_size < 8:
            raise ConfigError(f"image_size must be >= 8, got {self.image_size}")
        if not 0 < self.label_fraction <= 1:
            raise ConfigError(f"label_fraction must be in (0, 1], got {self.label_fraction}")
        if self.bootstrap < 0:
            raise ConfigError(f"bootstrap must be >= 0, got {self.bootstrap}")
        from medfound.data.slices import parse_slices  # here: the module imports torch

        parse_slices(self.slices)
        if self.slice_axis not in (None, 0, 1, 2):
            raise ConfigError(f"slice_axis must be 0, 1 or 2, got {self.slice_axis}")
