"""The model card: everything a user must know to feed a model and trust its output."""

import dataclasses
import json
from dataclasses import dataclass, field

from medfound.io.presets import Resize

# How a network's output becomes one embedding vector (`ModelCard.embedding`).
EMBEDDINGS = {
    "pooled": "the network's own pooling of its final features (the mean of the final map for "
    "convolutional networks, Swin and SAM's neck; timm's head pooling for other timm models)",
    "cls": "the class token after the final norm",
    "cls+mean": "the class token concatenated with the mean of the patch tokens (registers skipped)",
    "cls+proj": "the class token after the final norm, through the image projection (CLIP space)",
}


@dataclass(frozen=True)
class ModelCard:
    """One named model.

    Inputs are always in [0, 1] (what the presets produce); `input_mean`/`input_std` say how the model
    wrapper normalises them before the network ((x - mean) / std; mean = std = 0.5 maps to [-1, 1],
    None leaves [0, 1] as it is). Converted checkpoints can record a different contract in their file.
    `input_spacing` is the voxel spacing (mm) volumes are resampled to before resizing, when the
    model was trained at one; None leaves spacing as it is.

    The rest say what published models need: `architecture_args` are the builder's keyword
    arguments (timm's, as the publisher's hub config gives them); `resize` is the published resize
    recipe (None: the preset's fit, bilinear); `per_image_minmax` rescales each input to its own
    [min, max] inside the model (MedSAM);
    `embedding` names how the output becomes one vector (EMBEDDINGS); `register_tokens` counts the
    tokens between the class token and the patches; `mpp` is the magnification (microns per pixel)
    a pathology model was trained at; `weight_layouts` the checkpoint layouts it is published in
    (models/layouts.py) and `weight_files` the file names looked for in a model folder, in order.
    """

    name: str
    family: (
        str  # which builder makes the network: bit, timm, simclr, genesis, genesis2d, monai, vit
    )
    architecture: str  # the builder's own name for the network (e.g. timm's "resnetv2_50x1_bit")
    modality: str
    spatial_dims: int
    in_channels: int
    input_size: int | tuple[int, ...]
    embedding_dim: int
    preset: str
    description: str
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None
    weights_source: str = "none published: train your own (medfound pretrain) or pass --weights"
    licence: str = ""
    feature_layout: str = "(C, H, W) per image; C = embedding_dim"
    input_spacing: tuple[float, ...] | None = None
    architecture_args: dict = field(default_factory=dict)
    resize: Resize | None = None
    per_image_minmax: bool = False
    embedding: str = "pooled"
    register_tokens: int = 0
    mpp: float | None = None
    weight_layouts: tuple[str, ...] = ()
    weight_files: tuple[str, ...] = ()

    @property
    def input_contract(self) -> str:
        """A one-line description of the expected input range and the in-model scaling."""
        if self.per_image_minmax:
            scaling = "rescaled per image to its own [min, max] by medfound before the network"
        elif self.input_mean is None:
            scaling = "fed to the network as is"
        elif set(self.input_mean) == {0.5} and set(self.input_std or ()) == {0.5}:
            scaling = "mapped to [-1, 1] (2x - 1) by medfound before the network"
        else:
            scaling = f"normalised with mean {self.input_mean}, std {self.input_std} by medfound"
        return f"[0, 1] {'RGB' if self.in_channels == 3 else 'grayscale'}, {scaling}"

    def preprocess_args(self) -> dict:
        """The model-shape arguments of `medfound.io.preprocess` (and `ImageDataset`) for this model."""
        return {
            "spatial_dims": self.spatial_dims,
            "channels": self.in_channels,
            "native_size": self.input_size,
            "native_spacing": self.input_spacing,
            "native_resize": self.resize,
        }

    def to_dict(self) -> dict:
        """Plain-JSON form, with the derived input contract, for files and metadata."""
        return {**dataclasses.asdict(self), "input_contract": self.input_contract}

    def to_json(self) -> str:
        """The card as compact JSON (what exported files carry as metadata)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelCard":
        """Inverse of to_dict; derived and unknown keys are dropped, tuples restored."""
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs = {k: v for k, v in data.items() if k in names}
        for key in (
            "input_size",
            "input_mean",
            "input_std",
            "input_spacing",
            "weight_layouts",
            "weight_files",
        ):
            if isinstance(kwargs.get(key), list):
                kwargs[key] = tuple(kwargs[key])
        if isinstance(kwargs.get("resize"), dict):
            kwargs["resize"] = Resize(**kwargs["resize"])
        return cls(**kwargs)
