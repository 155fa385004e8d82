"""What a pretraining method is to the training loop: the `Method` protocol and its `MethodOutput`.

It lives with the methods (not in engine/) so that a method never imports the engine: the engine
depends on this protocol, the methods fulfil it.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn


@dataclass
class MethodOutput:
    """A method's loss and the scalars it logs beside it."""

    loss: torch.Tensor
    metrics: dict[str, torch.Tensor] = field(default_factory=dict)


class Method(Protocol):
    """What the loop needs from a pretraining method."""

    model: nn.Module

    def prepare(self, images: torch.Tensor, seed: int) -> Any:
        """Images (B, C, ...) in [0, 1] on the device -> the model's inputs (no gradients, fp32)."""

    def loss(self, model: nn.Module, inputs: Any) -> MethodOutput:
        """Run `model` (possibly DDP-wrapped) on `inputs`; the loss to minimise."""

    def export(self, model: nn.Module, run_dir: Path) -> list[Path]:
        """Write the trained artefacts (e.g. the encoder with its card) into `run_dir`."""
