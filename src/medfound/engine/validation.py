"""Validation while training: a loss on held-out data every N steps, the best step, plateau decay and
early stopping, all resumable.

The held-out loss is the method's own loss (for Genesis: restoration MSE) in eval mode, on batches
whose content and random preparation are fixed: chunk c of the validation items is prepared with a
seed drawn from (run seed, c), and chunks are dealt to ranks round-robin, so the figure is the same
at every validation, on any number of ranks, before and after a resume.
"""

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medfound.engine.distributed import default_workers
from medfound.engine.loader import autocast, build_loader
from medfound.engine.loop_config import LoopConfig
from medfound.errors import ConfigError, ImageReadError, skip_message

log = logging.getLogger(__name__)


@dataclass
class ValidationTracker:
    """Best validation loss so far and the patience counters of plateau decay and early stopping."""

    best: float = math.inf
    best_step: int = 0
    since_best: int = 0  # validations without improvement (early stopping counts these)
    since_decay: int = 0  # ... since the last improvement or plateau decay
    lr_factor: float = 1.0  # the plateau schedule's accumulated decay
    stopped: bool = False  # early stopping ended the run

    def update(self, value: float, step: int, config: LoopConfig) -> bool:
        """Record one validation; True when it is the best so far (lower is better)."""
        if value < self.best:
            self.best, self.best_step = value, step
            self.since_best = self.since_decay = 0
            return True
        self.since_best += 1
        self.since_decay += 1
        if config.schedule == "plateau" and self.since_decay >= config.plateau_patience:
            self.lr_factor *= config.decay_factor
            self.since_decay = 0
        patience = config.early_stop_patience
        if patience is not None and self.since_best >= patience:
            self.stopped = True
        return False

    def state_dict(self) -> dict:
        """Plain values for the checkpoint."""
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` gave (unknown keys are an error: another medfound wrote it)."""
        unknown = set(state) - set(asdict(self))
        if unknown:
            raise ConfigError(f"--resume: unknown validation state {sorted(unknown)} in checkpoint")
        for key, value in state.items():
            setattr(self, key, value)


def validation_chunks(size: int, batch: int, rank: int, world_size: int) -> list[list[int]]:
    """This rank's chunks of the item indices 0..size-1: chunk c is items [c*batch, (c+1)*batch)
    (the last may be shorter), and rank r takes the chunks c with c % world_size == r."""
    chunks = [list(range(s, min(s + batch, size))) for s in range(0, size, batch)]
    return chunks[rank::world_size]


def chunk_seed(seed: int, chunk: int) -> int:
    """The preparation seed of validation chunk `chunk` (apart from the training steps' seeds)."""
    return int(np.random.SeedSequence([seed, 1 << 30, chunk]).generate_state(1)[0])


class _Chunks(torch.utils.data.Sampler):
    def __init__(self, chunks: list[list[int]], keyed_by_epoch: bool):
        self.chunks, self.keyed = chunks, keyed_by_epoch

    def __len__(self) -> int:
        return len(self.chunks)

    def __iter__(self):
        for chunk in self.chunks:  # epoch 0 always: the same cubes at every validation
            yield [(0, i) for i in chunk] if self.keyed else chunk


class Validator:
    """Computes the validation loss; its loader (and worker processes) are made once per run.

    A chunk is one global batch's items, validated on one rank (without gradients, so it needs
    less memory than a training step on that rank's share). Unreadable items are logged once and
    kept in `skipped`.
    """

    def __init__(self, method, dataset: Dataset, config: LoopConfig, ctx, device, items: int):
        """`items`: dataset items per chunk (the training loop's items per global batch)."""
        self.method, self.config, self.ctx, self.device = method, config, ctx, device
        self.skipped: dict[str, str] = {}
        chunks = validation_chunks(len(dataset), items, ctx.rank, ctx.world_size)
        keyed = getattr(dataset, "keyed_by_epoch", False)
        # Few workers: validation is occasional, and each worker holds its own decoded volumes.
        workers = min(default_workers() if config.workers is None else config.workers, 2)
        self.loader = build_loader(
            dataset, device, workers, batch_sampler=_Chunks(chunks, keyed), seed=config.seed
        )

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> float:
        """Mean loss per sample over the whole validation set (all ranks), `module` in eval mode."""
        ctx, device, config = self.ctx, self.device, self.config
        was_training = module.training
        module.eval()
        total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, samples)
        try:
            for i, batch in enumerate(self.loader):
                for source, reason in batch["errors"]:
                    if source not in self.skipped:
                        log.warning("validation: skipped %s", skip_message(source, reason))
                        self.skipped[source] = reason
                if batch["tensor"] is None:
                    continue
                images = batch["tensor"].to(device, non_blocking=True)
                # This rank's i-th chunk is chunk rank + i * world_size of the whole set.
                seed = chunk_seed(config.seed, ctx.rank + i * ctx.world_size)
                inputs = self.method.prepare(images, seed)
                with autocast(device, config.precision):
                    loss = self.method.loss(module, inputs).loss.double()
                total += torch.stack([loss * len(images), total.new_tensor(len(images))])
        finally:
            module.train(was_training)
        if ctx.world_size > 1:
            torch.distributed.all_reduce(total)
        if total[1] == 0:
            raise ImageReadError("validation: no readable item in the validation data")
        value = float(total[0] / total[1])
        if not math.isfinite(value):
            raise ConfigError(
                f"validation loss is {value}: training diverged (lower --lr, or clip gradients "
                "with --clip-grad-norm)"
            )
        return value
