"""Validation while training: a loss or a score on held-out data every N steps, the best step,
plateau decay and early stopping, all resumable.

A pretraining method is validated by its own loss (for Genesis: restoration MSE) in eval mode, on
batches whose content and random preparation are fixed: chunk c of the validation items is prepared
with a seed drawn from (run seed, c), and chunks are dealt to ranks round-robin, so the figure is the
same at every validation, on any number of ranks, before and after a resume. A supervised method
(methods/base.py's ScoredMethod) is validated by a score over the whole held-out set (macro AUC, Dice):
its predictions of every chunk are gathered from all ranks and scored once.
"""

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from medfound.data.slices import pool_slices
from medfound.engine.distributed import default_workers
from medfound.engine.loader import autocast, build_loader
from medfound.engine.loop_config import LoopConfig
from medfound.errors import ConfigError, ImageReadError, skip_message

log = logging.getLogger(__name__)


@dataclass
class ValidationTracker:
    """Best validation figure so far and the patience counters of plateau decay and early stopping.

    A loss is better lower; a score (`higher_is_better`) higher."""

    higher_is_better: bool = False
    best: float = math.nan  # nan until the first validation
    best_step: int = 0
    since_best: int = 0  # validations without improvement (early stopping counts these)
    since_decay: int = 0  # ... since the last improvement or plateau decay
    lr_factor: float = 1.0  # the plateau schedule's accumulated decay
    stopped: bool = False  # early stopping ended the run

    @property
    def has_best(self) -> bool:
        """Whether a validation has been recorded."""
        return not math.isnan(self.best)

    def update(self, value: float, step: int, config: LoopConfig) -> bool:
        """Record one validation; True when it is the best so far."""
        better = value > self.best if self.higher_is_better else value < self.best
        if not self.has_best or better:
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
    """Computes the validation loss or score; its loader (and worker processes) are made once per run.

    A chunk is one global batch's items, validated on one rank (without gradients, so it needs
    less memory than a training step on that rank's share). Unreadable items are logged once and
    kept in `skipped`.
    """

    def __init__(self, method, dataset: Dataset, config: LoopConfig, ctx, device, items: int):
        """`items`: dataset items per chunk (the training loop's items per global batch)."""
        self.method, self.config, self.ctx, self.device = method, config, ctx, device
        self.skipped: dict[str, str] = {}
        self.details: dict[str, float | None] = {}  # a scored method's other figures, if any
        self.scored = hasattr(method, "score")
        # What validation rows call the figure: val_loss, or val_<score> of a supervised method.
        self.name = f"val_{method.score_name}" if self.scored else "val_loss"
        items = getattr(method, "validation_items", items)
        if self.scored:  # a rank's share of a global batch: no rank embeds a whole one alone
            items = max(1, items // ctx.world_size)
        self.forward_size = max(items, 1)  # images per forward, however many a chunk holds
        if getattr(dataset, "holds_volumes", False):  # a chunk is one volume's slices, not a batch
            items = 1
        chunks = validation_chunks(len(dataset), items, ctx.rank, ctx.world_size)
        keyed = getattr(dataset, "keyed_by_epoch", False)
        # Few workers: validation is occasional, and each worker holds its own decoded volumes.
        workers = min(default_workers() if config.workers is None else config.workers, 2)
        self.loader = build_loader(
            dataset, device, workers, batch_sampler=_Chunks(chunks, keyed), seed=config.seed
        )

    @torch.no_grad()
    def __call__(self, module: nn.Module) -> float | None:
        """The validation figure over the whole validation set (all ranks), `module` in eval mode:
        the mean loss per sample, or the method's score (None: a score that is not defined on
        these outputs, said in a warning)."""
        was_training = module.training
        module.eval()
        try:
            value = self._score(module) if self.scored else self._mean_loss(module)
        finally:
            module.train(was_training)
        if value is None:
            log.warning("%s is not defined at this validation; it is not counted", self.name)
            return None
        if not math.isfinite(value):
            raise ConfigError(
                f"{self.name} is {value}: training diverged (lower --lr, or clip gradients "
                "with --clip-grad-norm)"
            )
        return value

    def _batches(self):
        """(chunk number in the whole set, images on the device, targets or None, the batch's
        items) of this rank."""
        ctx = self.ctx
        for i, batch in enumerate(self.loader):
            for source, reason in batch["errors"]:
                if source not in self.skipped:
                    log.warning("validation: skipped %s", skip_message(source, reason))
                    self.skipped[source] = reason
            if batch["tensor"] is None:
                continue
            # This rank's i-th chunk is chunk rank + i * world_size of the whole set.
            yield (
                ctx.rank + i * ctx.world_size,
                batch["tensor"],
                batch.get("target"),
                batch["items"],
            )

    def _mean_loss(self, module: nn.Module) -> float:
        device, config = self.device, self.config
        total = torch.zeros(2, dtype=torch.float64, device=device)  # (sum of losses, samples)
        for chunk, images, targets, _ in self._batches():
            images = images.to(device, non_blocking=True)
            inputs = prepare(self.method, images, chunk_seed(config.seed, chunk), targets, device)
            with autocast(device, config.precision):
                loss = self.method.loss(module, inputs).loss.double()
            total += torch.stack([loss * len(images), total.new_tensor(len(images))])
        if self.ctx.world_size > 1:
            torch.distributed.all_reduce(total)
        if total[1] == 0:
            raise ImageReadError("validation: no readable item in the validation data")
        return float(total[0] / total[1])

    def _score(self, module: nn.Module) -> float:
        chunks: list[tuple[int, object, object]] = []
        unlabelled = 0  # chunks without targets: raised after the gather, on every rank alike
        for chunk, images, targets, items in self._batches():
            if targets is None:
                unlabelled += 1
                continue
            with autocast(self.device, self.config.precision):
                outputs = [
                    self.method.predict(module, part.to(self.device, non_blocking=True))
                    for part in images.split(self.forward_size)
                ]
            # a sliced volume is scored once, by the mean of its slices' outputs
            chunks.append((chunk, pool_slices(torch.cat(outputs), items), targets))
        parts = [(unlabelled, chunks)]
        if self.ctx.world_size > 1:  # every rank scores the same, whole set (in chunk order)
            parts = self.ctx.gather(parts[0])
        if any(count for count, _ in parts):
            raise ConfigError("validation data without labels cannot be scored")
        chunks = [part for _, rank_chunks in parts for part in rank_chunks]
        if not chunks:
            raise ImageReadError("validation: no readable item in the validation data")
        chunks.sort(key=lambda part: part[0])
        outputs, targets = [part[1] for part in chunks], [part[2] for part in chunks]
        # scored once, on rank 0, and shared: every rank then decides alike (best, early stop)
        score = self.ctx.on_main(lambda: self.method.score(outputs, targets))
        if isinstance(score, dict):  # the figure, and others logged beside it
            self.details = {k: v for k, v in score.items() if k != self.method.score_name}
            score = score[self.method.score_name]
        return None if score is None else float(score)


def prepare(method, images: torch.Tensor, seed: int, targets, device) -> object:
    """The method's inputs for a batch: with its targets for labelled data (on the device)."""
    if targets is None:
        return method.prepare(images, seed)
    return method.prepare(images, seed, targets.to(device, non_blocking=True))
