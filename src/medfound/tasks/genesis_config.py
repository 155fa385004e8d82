"""The config of a Models Genesis run: the loop's settings plus data, cubes, corruption and model.

No torch at import: the CLI builds its options from this class (cli/config_options.py). Two recipes
set the loop's defaults: `medfound` (AdamW 1e-3, batch 8, warmup-cosine) and `original`, the
published one (SGD lr 1, momentum 0.9, batch 6, x0.5 every 40 epochs, validation every epoch,
early stopping after 50 validations without improvement; REFERENCE.md section 3). Values given
in a config file or on the command line override the recipe. An epoch here is one pass over the
volumes (cubes_per_volume cubes from each), where the original's was a pass over its pre-cut cubes.
"""

import dataclasses
from dataclasses import dataclass
from typing import Literal

from medfound.engine.config import setting
from medfound.engine.loop_config import LoopConfig
from medfound.errors import ConfigError
from medfound.sizes import parse_sizes

MODALITY_PRESETS = {"ct": "ct", "mri": "mri", "xray": "cxr"}
DEFAULT_MODELS = {3: "unet3d_genesis.chest_ct", 2: "unet2d_genesis.resnet18"}
DEFAULT_CUBES = {3: (64, 64, 32), 2: (224, 224)}

# The recipes' loop settings beyond the class defaults (which are the `medfound` recipe). The
# epoch-counted ones are filled in once the data are counted (ORIGINAL_EPOCHS), since the loop
# counts steps.
RECIPES: dict[str, dict] = {
    "medfound": {},
    "original": {
        "batch_size": 6,
        "optimizer": "sgd",
        "lr": 1.0,
        "lr_scaling": "none",
        "momentum": 0.9,
        "weight_decay": 0.0,
        "warmup_epochs": 0.0,
        "schedule": "step",
        "decay_factor": 0.5,
        "early_stop_patience": 50,
        "epochs": 10000,  # the original trained until early stopping
    },
}
# The original's step decay every 0.8 x patience (50) epochs and validation once per epoch.
ORIGINAL_EPOCHS = {"decay_every": 40, "validate_every": 1}


@dataclass
class GenesisConfig(LoopConfig):
    """A Models Genesis run (the loop's fields default to the `medfound` recipe)."""

    data: list[str] = setting(list, "Folder (recursive), volume file or CSV with a path column")
    val_data: list[str] = setting(list, "Held-out volumes for validation (none: val_fraction)")
    val_fraction: float = setting(0.1, "Share of volumes held out when validating without val_data")
    recipe: Literal["medfound", "original"] = setting(
        "medfound", "medfound (AdamW, warmup-cosine) or original (SGD lr 1, step decay, patience)"
    )
    dims: Literal[3, 2] = setting(3, "3: cubes from volumes; 2: patches from images or slices")
    cube: str | None = setting(None, "Cube size X,Y,Z (2D: H,W); none: 64,64,32 (2D: 224,224)")
    modality: Literal["ct", "mri", "xray"] = setting(
        "ct", "ct (clip [-1000, 1000] HU), mri (per-scan percentiles) or xray (value range)"
    )
    cubes_per_volume: int = setting(2, "Cubes cut from each volume read (batch: a multiple)")
    target_spacing: str | None = setting(
        None, "Resample to X,Y,Z mm before cutting (none: the scan's own, as the original)"
    )
    foreground_threshold: float = setting(0.05, "Intensity in [0, 1] above which a voxel counts")
    foreground_fraction: float = setting(0.5, "Share of a cube's voxels above the threshold")
    small_volumes: Literal["pad", "refuse"] = setting("pad", "Volumes smaller than a cube")
    cache_mb: int = setting(1024, "Decoded volumes kept per worker, in MB")
    flip_p: float = setting(0.4, "Flip probability (all spatial axes)")
    shuffle_p: float = setting(0.5, "Local pixel shuffling probability")
    intensity_p: float = setting(0.9, "Non-linear intensity probability")
    invert_p: float = setting(0.5, "Share of intensity curves that invert")
    paint_p: float = setting(0.9, "Painting probability")
    outpaint_p: float = setting(0.8, "Share of paintings that out-paint")
    fill: float | None = setting(None, "Painting fill value (none: uniform noise, as the original)")
    model: str | None = setting(
        None, "Model (none: unet3d_genesis.chest_ct; 2D: unet2d_genesis.resnet18)"
    )
    init: str = setting("random", "Weights to start from (as --weights takes), or random")
    compat_batchnorm: bool = setting(
        False, "BatchNorm always on batch statistics, as the original (validation too)"
    )

    # The medfound recipe's loop settings are this class's defaults.
    batch_size: int = setting(8, "Global batch in cubes, summed over ranks")
    optimizer: Literal["lars", "sgd", "adamw"] = setting("adamw", "lars, sgd or adamw")
    lr: float = setting(1e-3, "Learning rate (scaled by lr_scaling)")
    lr_scaling: Literal["linear", "sqrt", "none"] = setting("none", "linear, sqrt or none")
    weight_decay: float = setting(1e-5, "Weight decay (not on norms and biases)")
    warmup_epochs: float = setting(1.0, "Linear warmup, in epochs")

    def validate(self) -> None:
        """The loop's checks plus Genesis's."""
        # Settings counted in epochs are filled in from the data (epoch_settings): placeholders here.
        unset = {name: 1 for name in self.epoch_settings() if getattr(self, name) is None}
        LoopConfig.validate(dataclasses.replace(self, **unset))
        if not self.data:
            raise ConfigError("data: no volumes given (--data FOLDER|CSV|FILE)")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.cubes_per_volume < 1:
            raise ConfigError(f"cubes_per_volume must be >= 1, got {self.cubes_per_volume}")
        if self.batch_size % self.cubes_per_volume:
            raise ConfigError(
                f"batch_size {self.batch_size} must be a multiple of cubes_per_volume "
                f"{self.cubes_per_volume}"
            )
        if self.cache_mb < 0:
            raise ConfigError(f"cache_mb must be >= 0, got {self.cache_mb}")
        if not 0 <= self.foreground_fraction <= 1:
            raise ConfigError(
                f"foreground_fraction must be in [0, 1], got {self.foreground_fraction}"
            )
        self.cube_size()
        self.spacing()
        from medfound.methods.genesis.corrupt import CorruptionConfig  # torch: only when used

        CorruptionConfig(**self.corruption_fields())  # probabilities checked by name

    @classmethod
    def for_recipe(cls, recipe: str = "medfound", **fields) -> "GenesisConfig":
        """A config of `recipe` with `fields` on top (what the CLI's --recipe does)."""
        from medfound.engine.config import from_dict

        if recipe not in RECIPES:
            raise ConfigError(f"recipe must be one of {sorted(RECIPES)}, got {recipe!r}")
        return from_dict(cls, {**RECIPES[recipe], "recipe": recipe, **fields})

    def epoch_settings(self) -> dict[str, int]:
        """Loop settings this config counts in epochs, to be filled in (as steps) from the data:
        the original recipe's decay and validation, and validation once an epoch when --val-data
        is given without a cadence."""
        epochs: dict[str, int] = {}
        if self.recipe == "original":
            epochs |= ORIGINAL_EPOCHS
        if self.val_data:
            epochs.setdefault("validate_every", 1)
        return epochs

    def cube_size(self) -> tuple[int, ...]:
        """The cube's shape; each side divisible by 8 (3D: three poolings; 2D: by 32)."""
        if self.cube is None:
            return DEFAULT_CUBES[self.dims]
        sides = parse_sizes(self.cube, "cube", self.dims)
        multiple = 8 if self.dims == 3 else 32
        if any(s < multiple or s % multiple for s in sides):
            raise ConfigError(
                f"cube {self.cube}: each side must be a positive multiple of {multiple} "
                f"(the {self.dims}D U-Net halves it {3 if self.dims == 3 else 5} times)"
            )
        return sides

    def spacing(self) -> tuple[float, ...] | None:
        """The target spacing in mm, or None to keep each scan's."""
        if self.target_spacing is None:
            return None
        values = parse_sizes(self.target_spacing, "target_spacing", 3, float)
        if any(v <= 0 for v in values):
            raise ConfigError(f"target_spacing {self.target_spacing}: sizes must be > 0 mm")
        return values

    def model_name(self) -> str:
        """The model trained: the config's, else the default of `dims`."""
        return self.model or DEFAULT_MODELS[self.dims]

    def corruption_fields(self) -> dict:
        """The corruption's settings (methods/genesis/corrupt.py's CorruptionConfig fields)."""
        names = ("flip_p", "shuffle_p", "intensity_p", "invert_p", "paint_p", "outpaint_p", "fill")
        return {name: getattr(self, name) for name in names}
