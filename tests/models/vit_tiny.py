"""Tiny versions of the transformer cards, and helpers shared by their tests.

A tiny card keeps everything of its published card (architecture, embedding rule, layouts,
normalisation) except the width, depth and image size, so each test runs in a second on a CPU.
"""

import dataclasses

import torch

from medfound.models import get_card

# timm arguments that shrink a ViT; a card's own arguments (registers, SwiGLU, LayerScale) stay.
TINY_VIT = {"embed_dim": 32, "depth": 2, "num_heads": 2}


def tiny_card(name: str, input_size: int, embedding_dim: int, **args):
    """The registered card `name` at a tiny width (`args` override its architecture arguments)."""
    card = get_card(name)
    return dataclasses.replace(
        card,
        architecture_args={**card.architecture_args, **args},
        input_size=input_size,
        embedding_dim=embedding_dim,
    )


def scramble(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter and float buffer moved off its initial value, so that a tensor loaded into
    the wrong place (two norms swapped, q and k exchanged) changes the output."""
    generator = torch.Generator().manual_seed(seed)
    saved = module.state_dict()  # buffers a checkpoint holds (not recomputed ones like masks)
    tensors = [
        *module.named_parameters(),
        *((n, b) for n, b in module.named_buffers() if n in saved),
    ]
    with torch.no_grad():
        for name, tensor in tensors:
            if tensor.is_floating_point() and "running_var" not in name:
                tensor.add_(0.2 * torch.randn(tensor.shape, generator=generator))
            elif "running_var" in name:
                tensor.mul_(1 + torch.rand(tensor.shape, generator=generator))
    return module.eval()


def normalised(x: torch.Tensor, mean, std) -> torch.Tensor:
    """What the publishers' pipelines feed their networks: (x - mean) / std per channel."""
    shape = (1, -1, 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


def assert_close_embeddings(ours: torch.Tensor, reference: torch.Tensor) -> None:
    """Relative error below 1e-4 (the issue's bar), and a meaningful reference."""
    assert ours.shape == reference.shape
    assert reference.abs().max() > 1e-3
    error = (ours - reference).norm() / reference.norm()
    assert error < 1e-4, f"relative error {error:.2e}"
