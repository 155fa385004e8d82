"""The one DataLoader builder for embedding and training: decoding in workers, one thread each."""

import contextlib

import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from medfound.data.datasets import collate_items, worker_init
from medfound.engine.distributed import default_workers


def build_loader(
    dataset: Dataset,
    device: torch.device,
    workers: int | None,
    *,
    batch_size: int | None = None,
    batch_sampler: Sampler | None = None,
    seed: int = 0,
) -> DataLoader:
    """A loader of `data.collate_items` batches: fixed `batch_size` in order, or a `batch_sampler`.

    `workers` None means `default_workers()`; never more workers than items. With a batch sampler the
    workers persist across epochs (the sampler runs in this process, so order stays exact). The
    loader draws its workers' base seed from its own generator (`seed`), not from torch's global one:
    otherwise every new pass over the data would consume a global random number, and a resumed run,
    which starts a pass where the uninterrupted one did not, would see other dropout masks after it.
    """
    workers = default_workers() if workers is None else workers
    workers = min(workers, len(dataset))  # type: ignore[arg-type]
    return DataLoader(
        dataset,
        batch_size=batch_size if batch_sampler is None else 1,
        batch_sampler=batch_sampler,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        persistent_workers=workers > 0 and batch_sampler is not None,
        prefetch_factor=4 if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )


def autocast(device: torch.device, precision: str):
    """bf16 autocast on `device` for precision "bf16"; nothing for "fp32"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
