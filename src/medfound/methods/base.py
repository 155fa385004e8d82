"""What a method is to the training loop: the `Method` protocol, its `MethodOutput`, and the
`ScoredMethod` additions of supervised methods (validation by a score such as AUC or Dice).

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
    """What the loop needs from a method (pretraining or supervised)."""

    model: nn.Module

    def prepare(self, images: torch.Tensor, seed: int, targets: torch.Tensor | None = None) -> Any:
        """Images (B, C, ...) in [0, 1] on the device -> the model's inputs (no gradients, fp32).

        Labelled data (items with a `target`) pass their targets (B, ...) too; a pretraining method,
        which only ever sees unlabelled data, may leave the argument out of its signature.
        """

    def loss(self, model: nn.Module, inputs: Any) -> MethodOutput:
        """Run `model` (possibly DDP-wrapped) on `inputs`; the loss to minimise."""

    def export(self, model: nn.Module, run_dir: Path) -> list[Path]:
        """Write the trained artefacts (e.g. the encoder with its card) into `run_dir`."""


class ScoredMethod(Method, Protocol):
    """A supervised method validated by a score on held-out data (higher or lower is better).

    The loop runs `predict` on every validation chunk (eval mode, no gradients), gathers outputs and
    targets of all chunks and ranks in chunk order, and calls `score` once on the whole set.
    `validation_items` (optional attribute) is the number of dataset items per validation chunk:
    1 for whole images of different sizes; by default one global batch.
    """

    score_name: str  # e.g. "macro_auc" or "dice": logged as val_<score_name>
    higher_is_better: bool

    def predict(self, model: nn.Module, images: torch.Tensor) -> Any:
        """The model's outputs for a validation chunk, on the CPU (probabilities, masks, ...)."""

    def score(self, outputs: list, targets: list) -> float:
        """The validation score of all chunks' outputs and targets (lists in chunk order)."""
