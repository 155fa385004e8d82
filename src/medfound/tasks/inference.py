"""Run a trained network over a dataset once, in eval mode: what evaluation and `medfound predict`
share. Unreadable items are reported and skipped, never silent."""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.utils.data import Dataset

from medfound.data.slices import pool_slices
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
    volumes: bool = False,
) -> Outputs:
    """`forward(images on the device)` -> per-item outputs, over `dataset` in order.

    `volumes`: the dataset may give sliced volumes (items of k slices, data/slices.py): the loader
    then takes one item at a time and `rebatched` joins them into batches; the model sees at most
    `batch_size` images per call, and a volume's output is the mean of its slices'."""
    device = torch.device(device)
    result = Outputs()
    loader = build_loader(dataset, device, workers, batch_size=1 if volumes else batch_size)
    for batch in rebatched(loader, batch_size) if volumes else loader:
        for source, reason in batch["errors"]:
            log.warning("skipped %s", skip_message(source, reason))
        result.skipped.extend(batch["errors"])
        if batch["tensor"] is None:
            continue
        rows = [
            forward(part.to(device)).float().cpu() for part in batch["tensor"].split(batch_size)
        ]
        out = pool_slices(torch.cat(rows), batch["items"])
        for item, value in zip(batch["items"], out, strict=True):
            result.indices.append(item["index"])
            result.sources.append(item["source"])
            result.items.append(item)
            result.outputs.append(value)
    return result


def rebatched(loader, batch_size: int):
    """Loader batches joined until they hold at least `batch_size` images (or the loader ends)."""
    pending: list[dict] = []

    def joined() -> dict:
        tensors = [b["tensor"] for b in pending if b["tensor"] is not None]
        return {
            "tensor": torch.cat(tensors) if tensors else None,
            "items": [item for b in pending for item in b["items"]],
            "errors": [error for b in pending for error in b["errors"]],
        }

    count = 0
    for batch in loader:
        pending.append(batch)
        count += 0 if batch["tensor"] is None else batch["tensor"].shape[0]
        if count >= batch_size:
            yield joined()
            pending, count = [], 0
    if pending:
        yield joined()
