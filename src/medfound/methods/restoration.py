"""Models Genesis's restorative pretraining as a method for the training loop: corrupt, restore, MSE.

The trained module is the whole restoration network (encoder and decoder) of a Genesis model; its
input is the corrupted cube in [0, 1] and its target the uncorrupted one (methods/genesis). Export
writes the whole network with the model's card: `medfound embed` takes its encoder half, `medfound
restore` the whole, and fine-tuning either.
"""

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from medfound.methods.base import MethodOutput
from medfound.methods.genesis.corrupt import CorruptionConfig, GenesisCorruption
from medfound.methods.pretrained_file import save_pretrained
from medfound.models import FoundationModel

WEIGHTS_FILE = "genesis.safetensors"


class RestorationModel(nn.Module):
    """A Genesis FoundationModel's whole network: [0, 1] corrupted input -> restored [0, 1].

    Runs channels-last (channels_last_3d for volumes): on CPU the 3D U-Net reaches 0.70-0.77 of the
    GEMM rate, against 0.63-0.67 in the default layout (bench/genesis.py).
    """

    def __init__(self, model: FoundationModel):
        super().__init__()
        self.memory_format = (
            torch.channels_last_3d if model.card.spatial_dims == 3 else torch.channels_last
        )
        self.model = model.to(memory_format=self.memory_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.model.normalise(x).contiguous(memory_format=self.memory_format)
        return self.model.network(x)


class GenesisRestoration:
    """The Models Genesis method (see methods/base.py's Method)."""

    def __init__(
        self,
        model: FoundationModel,
        corruption: CorruptionConfig | None = None,
        *,
        provenance: dict | None = None,
    ):
        self.model = RestorationModel(model)
        self.corruption = GenesisCorruption(corruption)
        self.provenance = provenance or {}

    def prepare(self, images: torch.Tensor, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(corrupted inputs, uncorrupted targets) of a batch of cubes in [0, 1]."""
        return self.corruption(images, seed)

    def loss(self, model: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor]) -> MethodOutput:
        """Mean squared restoration error (in float32 even under bf16 autocast)."""
        corrupted, target = inputs
        restored = model(corrupted).float()
        return MethodOutput(loss=F.mse_loss(restored, target))

    def export(self, model: RestorationModel, run_dir: Path) -> list[Path]:
        """RUN_DIR/genesis.safetensors: the whole restoration network with the model's card."""
        path = save_pretrained(
            model.model,
            Path(run_dir) / WEIGHTS_FILE,
            method="genesis",
            description="restoration-pretrained with medfound",
            provenance=self.provenance,
        )
        return [path]
