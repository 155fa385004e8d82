"""FoundationModel: one contract for every backbone family (timm's forward_features idea).

Input is always [0, 1] (what the presets produce); the model applies its card's normalisation, runs
the network and returns a pooled embedding. `forward_features` gives the final feature map,
`forward_stages` the per-stage maps (what TF Hub's `endpoints` gave REMEDIS users).
"""

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medfound.models.card import ModelCard


class FoundationModel(nn.Module):
    """Base class; subclasses set `self.network` and implement the two feature methods."""

    stage_names: tuple[str, ...] = ()

    def __init__(self, card: ModelCard, network: nn.Module):
        super().__init__()
        self.card = card
        self.network = network
        channels = card.in_channels
        mean = card.input_mean if card.input_mean is not None else (0.0,) * channels
        std = card.input_std if card.input_std is not None else (1.0,) * channels
        shape = (1, channels) + (1,) * card.spatial_dims
        self.register_buffer("input_mean", torch.tensor(mean).view(shape), persistent=False)
        self.register_buffer("input_std", torch.tensor(std).view(shape), persistent=False)
        self.weights_sha256: str | None = None
        self.weights_path: str | None = None
        self.random_init = False

    def set_input_contract(self, mean: tuple[float, ...] | None, std: tuple[float, ...] | None):
        """Override the card's normalisation (a converted checkpoint may scale inputs itself)."""
        channels = self.card.in_channels
        mean = mean if mean is not None else (0.0,) * channels
        std = std if std is not None else (1.0,) * channels
        self.input_mean.copy_(torch.tensor(mean).view_as(self.input_mean))
        self.input_std.copy_(torch.tensor(std).view_as(self.input_std))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """[0, 1] input -> the range the network was trained on."""
        if self.card.per_image_minmax:
            # MedSAM's recipe: each image rescaled to its own [min, max] (range floored at 1e-8)
            axes = tuple(range(1, x.ndim))
            low = x.amin(dim=axes, keepdim=True)
            x = (x - low) / (x.amax(dim=axes, keepdim=True) - low).clamp_min(1e-8)
        return (x - self.input_mean) / self.input_std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Final feature map (B, embedding_dim, *spatial) of a [0, 1] input."""
        raise NotImplementedError

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Feature maps after each stage, named by `stage_names`; the last is forward_features."""
        raise NotImplementedError

    def embedding_and_stages(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The embedding and every stage's map of one input (what `medfound export` returns)."""
        stages = self.forward_stages(x)
        return self.pool(stages[-1]), stages

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """Global average over the spatial axes -> (B, embedding_dim)."""
        return features.mean(dim=tuple(range(2, features.ndim)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled embedding (B, embedding_dim) of a batch in [0, 1]."""
        return self.pool(self.forward_features(x))

    @torch.inference_mode()
    def embed(
        self, images: torch.Tensor | Iterable, batch_size: int = 8, preset=None
    ) -> np.ndarray:
        """Embeddings (N, embedding_dim) as float32 numpy.

        `images` is a tensor batch in [0, 1] of the model's input shape, or an iterable of paths,
        MedicalImages or arrays, which are read and preprocessed with `preset` (default: the card's).
        """
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            if isinstance(images, torch.Tensor):
                batches: Iterable[torch.Tensor] = images.split(batch_size)
            else:
                batches = _preprocessed_batches(self, images, batch_size, preset)
            out = [self(batch.to(device)).float().cpu() for batch in batches]
        finally:
            self.train(was_training)
        if not out:
            return np.zeros((0, self.card.embedding_dim), dtype=np.float32)
        return torch.cat(out).numpy()


def _preprocessed_batches(model: FoundationModel, images: Iterable, batch_size: int, preset):
    from medfound.io import MedicalImage, get_preset, preprocess, read_image

    preset = preset or get_preset(model.card.preset)
    batch: list[torch.Tensor] = []
    for item in images:
        if isinstance(item, str | Path):
            item = read_image(item)
        elif isinstance(item, np.ndarray):
            array = item.astype(np.float32)
            array = array[None] if array.ndim == model.card.spatial_dims else array
            item = MedicalImage(array=array, source_id="array")
        batch.append(preprocess(item, preset, **model.card.preprocess_args()))
        if len(batch) == batch_size:
            yield torch.stack(batch)
            batch = []
    if batch:
        yield torch.stack(batch)
