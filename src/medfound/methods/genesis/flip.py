"""Random flips of input and target together: up to 3 passes, each with p 0.4 flipping one random
spatial axis (the original never flipped z because of an axis bug; here every spatial axis can flip)."""

from dataclasses import dataclass

import torch


@dataclass
class FlipParams:
    """flips[b, d]: whether sample b ends up flipped along spatial axis d (the passes' parity)."""

    flips: torch.Tensor


def sample(shape: tuple[int, ...], generator: torch.Generator, p: float = 0.4, passes: int = 3):
    """Draw each sample's passes; two flips of one axis cancel, as in the original."""
    batch, dims = shape[0], len(shape) - 2
    happen = torch.rand(batch, passes, generator=generator) < p
    axis = torch.randint(0, dims, (batch, passes), generator=generator)
    counts = torch.zeros(batch, dims, dtype=torch.long)
    counts.scatter_add_(1, axis, happen.long())
    return FlipParams(flips=counts % 2 == 1)


def apply(x: torch.Tensor, params: FlipParams) -> torch.Tensor:
    """Flip each sample along its chosen axes."""
    flips = params.flips.to(x.device)
    for d in range(flips.shape[1]):
        chosen = flips[:, d].view(-1, *([1] * (x.ndim - 1)))
        x = torch.where(chosen, x.flip(2 + d), x)
    return x
