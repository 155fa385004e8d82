"""The config of a SimCLR run: the loop's settings plus data, model, augmentation and objective.

No torch at import: the CLI builds its options from this class (cli/config_options.py).
"""

from dataclasses import dataclass
from typing import Literal

from medfound.engine.config import setting
from medfound.engine.loop_config import LoopConfig
from medfound.errors import ConfigError

# The fields that override the preset's views (methods/simclr_views.py's ViewConfig).
VIEW_FIELDS = (
    "image_size",
    "color_strength",
    "rotation_degrees",
    "equalize_p",
    "elastic_p",
    "blur_p",
)


@dataclass
class SimCLRConfig(LoopConfig):
    """A SimCLR run: data, model, augmentation, objective and the loop (defaults: REMEDIS)."""

    data: list[str] = setting(list, "Folder (recursive), image file or CSV with a path column")
    model: str = setting(
        "resnetv2_50x1_bit.bit_m_in21k", "Backbone: any 2D RGB model (REMEDIS starts from BiT-M)"
    )
    init: str = setting(
        "", "Weights to start from (as --weights takes; REMEDIS starts from BiT's), or random"
    )
    preset: Literal["path", "cxr"] = setting(
        "path", "path or cxr (+ equalisation, elastic): reading and views, both at 224 (REMEDIS)"
    )
    image_size: int | None = setting(None, "View side (none: the preset's)")
    temperature: float = setting(0.1, "NT-Xent temperature")
    eval_data: str | None = setting(
        None,
        "Labelled images (a label CSV: path, label column(s), optional patient) probed by k-NN and "
        "logistic regression on the encoder every validate_every steps (none: no probing)",
    )
    micle_p: float = setting(
        0.0,
        "MICLe: chance that a pair is two images of one patient (data CSV with a patient or study "
        "column; items are then patients)",
    )
    head_layers: int = setting(2, "Projection head layers (REMEDIS: 2; SimCLR v2: 3)")
    lars_exclude: Literal["remedis", "norms"] = setting(
        "remedis",
        "Left out of weight decay and LARS adaptation: remedis (BatchNorm and biases, as REMEDIS "
        "ran: BiT's GroupNorm decayed and adapted) or norms (every norm layer, biases, 1-D)",
    )
    head_hidden_dim: int | None = setting(None, "Head width (none: the embedding's)")
    projection_dim: int = setting(128, "Projection size")
    color_strength: float | None = setting(None, "Colour jitter strength (none: preset's, 1.0)")
    rotation_degrees: float | None = setting(
        None, "Rotation +-degrees, every view (none: preset's, 0: REMEDIS never rotated)"
    )
    equalize_p: float | None = setting(None, "Histogram equalisation p (none: preset's)")
    elastic_p: float | None = setting(None, "Elastic deformation p (none: preset's)")
    blur_p: float | None = setting(None, "Gaussian blur p (none: preset's, 0.5)")
    tile_mpp: float = setting(0.5, "Whole slides in data: micrometres per pixel of the tiles")
    tiles_per_slide: int = setting(
        64, "Whole slides in data: random tissue tiles per slide and epoch"
    )
    min_tissue: float = setting(0.5, "Whole slides in data: smallest tissue share of a tile")
    slide_mpp: float | None = setting(
        None, "Whole slides in data: level-0 um/px (over what they state)"
    )
    slide_reader: Literal["auto", "tiffslide", "openslide"] = setting(
        "auto", "Whole slides in data: auto (tiffslide; OpenSlide for MIRAX and the like), or one"
    )

    def validate(self) -> None:
        """The loop's checks plus SimCLR's."""
        super().validate()
        if not self.data:
            raise ConfigError("data: no images given (--data FOLDER|CSV|FILE)")
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {self.temperature}")
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"image_size must be >= 16, got {self.image_size}")
        if not 0.0 <= self.micle_p <= 1.0:
            raise ConfigError(f"micle_p must lie in [0, 1], got {self.micle_p}")
        if self.tiles_per_slide < 1:
            raise ConfigError(f"tiles_per_slide must be >= 1, got {self.tiles_per_slide}")
        if self.tile_mpp <= 0 or (self.slide_mpp is not None and self.slide_mpp <= 0):
            raise ConfigError(
                f"tile_mpp and slide_mpp must be > 0, got {self.tile_mpp}, {self.slide_mpp}"
            )
        if not 0.0 <= self.min_tissue <= 1.0:
            raise ConfigError(f"min_tissue must lie in [0, 1], got {self.min_tissue}")
        self.view_config()  # the augmentation fields, checked before any model is built
        if not self.init:  # REMEDIS always starts from BiT weights: a random start is asked for
            raise ConfigError(
                "init: name the starting weights (--init FILE; REMEDIS starts from BiT's), or say "
                "--init random to pretrain from a random initialisation on purpose"
            )

    def view_config(self):
        """The augmentation settings: the preset's, with this config's explicit values on top."""
        overrides = {n: getattr(self, n) for n in VIEW_FIELDS if getattr(self, n) is not None}
        from medfound.methods.simclr_views import preset_views  # torch and kornia: only when used

        return preset_views(self.preset, **overrides)
