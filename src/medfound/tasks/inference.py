"""Run a trained network over a dataset once, in eval mode: what evaluation and `medfound predict`
share. Unreadable items are reported and skipped, never silent."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from medfound.engine.loader import build_loader
from medfound.errors import skip_message

log = logging.getLogger(__name__)


@dataclass
class Outputs:
    """What a pass produced: per readable item its dataset index, source, metadata and output."""

    indices: list[int] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    items: list[dict] = field(default_factory=list)
    outputs: list[torch.Tensor] = field(default_factory=list)  # one per item, on the CPU
    skipped: list[tuple[str, str]] = field(default_factory=list)


@torch.inference_mode()
def run_over(
    forward: Callable[[torch.Tensor], torch.Tensor],
    dataset: Dataset,
    *,
    batch_size: int = 16,
    device: torch.device | str = "cpu",
    workers: int | None = None,
) -> Outputs:
    """`forward(images on the device)` -> per-item outputs, over `dataset` in order."""
    device = torch.device(device)
    result = Outputs()
    loader = build_loader(dataset, device, workers, batch_size=batch_size)
    for batch in loader:
        for source, reason in batch["errors"]:
            log.warning("skipped %s", skip_message(source, reason))
        result.skipped.extend(batch["errors"])
        if batch["tensor"] is None:
            continue
        out = forward(batch["tensor"].to(device)).float().cpu()
        for item, value in zip(batch["items"], out, strict=True):
            result.indices.append(item["index"])
            result.sources.append(item["source"])
            result.items.append(item)
            result.outputs.append(value)
    return result
