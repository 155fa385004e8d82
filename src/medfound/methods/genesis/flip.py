"""Random flips of input and target together, as the original: up to 3 passes, a further pass while
U < p (0.4), each flipping one random spatial axis. The original never flipped z (an axis bug); here
every spatial axis can flip."""

from dataclasses import dataclass

import torch


@dataclass
class FlipParams:
    """flips[b, d]: whether sample b ends up flipped along spatial axis d (the passes' parity)."""

    flips: torch.Tensor


def sample(shape: tuple[int, ...], generator: torch.Generator, p: float = 0.4, passes: int = 3):
    """Draw each sample's passes; two flips of one axis cancel, as in the original."""
    batch, dims = shape[0], len(shape) - 2
    # A pass happens while every draw so far was < p (the original's while loop).
    happen = (torch.rand(batch, passes, generator=generator) < p).cummin(dim=1).values
    axis = torch.randint(0, dims, (batch, passes), generator=generator)
    counts = torch.zeros(batch, dims, dtype=torch.long)
    counts.scatter_add_(1, axis, happen.long())
    return FlipParams(flips=counts % 2 == 1)


def apply(x: torch.Tensor, params: FlipParams) -> torch.Tensor:
    """A copy of `x` with each sample flipped along its chosen axes."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # contiguous, whatever x is
    for b, flips in enumerate(params.flips.tolist()):
        axes = [1 + d for d, flipped in enumerate(flips) if flipped]  # of x[b]: (C, *spatial)
        out[b] = x[b].flip(axes) if axes else x[b]
    return out
