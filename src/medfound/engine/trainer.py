"""The one training loop every pretraining method uses.

A method (methods/) supplies the trainable module, a `prepare` step that turns a batch of images into
its inputs (SimCLR's two views, Genesis's corrupted volumes; run without gradients, in float32) and a
`loss`. The loop owns everything else: devices and DDP under torchrun (gloo on CPU, NCCL on GPU,
BatchNorm statistics made global), bf16 autocast, the optimiser and warmup-cosine schedule, gradient
clipping, metrics, a progress bar on rank 0, atomic checkpoints and exact resumption.

Exactness: the data order is a function of (seed, epoch) and the number of batches consumed
(engine/sampling.py), and each step's random augmentation is seeded from (seed, step, rank), so a run
resumed from a checkpoint repeats what an uninterrupted run would have done.
"""

import contextlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset

from medfound.data.datasets import collate_items, worker_init
from medfound.engine.checkpoint import list_checkpoints, load_checkpoint, save_checkpoint
from medfound.engine.global_batchnorm import make_global
from medfound.engine.metrics_log import MetricsLog
from medfound.engine.optim import build_optimizer, scaled_learning_rate, warmup_cosine
from medfound.engine.progress import progress_bar
from medfound.engine.runtime import (
    DistContext,
    default_workers,
    init_distributed,
    local_rank,
    resolve_device,
)
from medfound.engine.sampling import EpochBatchSampler
from medfound.errors import ConfigError, ImageReadError, first_items, skip_message

log = logging.getLogger(__name__)


@dataclass
class LoopConfig:
    """The loop's settings, shared by every method's config (defaults: REMEDIS's SimCLR stage)."""

    batch_size: int = 512  # global: summed over ranks; the learning-rate scaling uses it
    epochs: int = 100
    max_steps: int | None = None  # overrides epochs; also the length of the cosine schedule
    optimizer: Literal["lars", "sgd", "adamw"] = "lars"
    lr: float = 0.3  # base rate, scaled by lr_scaling
    lr_scaling: Literal["linear", "sqrt"] = "linear"
    weight_decay: float = 1e-6
    momentum: float = 0.9
    warmup_epochs: float = 10.0
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False  # torch.compile the model (forward and backward); minutes to compile once
    clip_grad_norm: float | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None  # decoding workers per rank; None: half the cores, at most 8
    checkpoint_every: int = 500  # steps
    keep_checkpoints: int = 2
    log_every: int = 10  # steps
    progress: bool = True
    tensorboard: bool = True

    def validate(self) -> None:
        """Refuse impossible values by field name."""
        positive = ["batch_size", "epochs", "checkpoint_every", "log_every", "keep_checkpoints"]
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")
        if self.lr <= 0 or self.warmup_epochs < 0 or self.weight_decay < 0:
            raise ConfigError("lr must be > 0, warmup_epochs and weight_decay >= 0")
        if self.workers is not None and self.workers < 0:
            raise ConfigError(f"workers must be >= 0, got {self.workers}")


# What may differ when a run is resumed: none of these changes what is computed.
RESUMABLE_FIELDS = frozenset(
    {
        "device",
        "workers",
        "checkpoint_every",
        "keep_checkpoints",
        "log_every",
        "progress",
        "tensorboard",
    }
)


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


@dataclass
class TrainSummary:
    """What a run did."""

    run_dir: Path
    start_step: int = 0
    step: int = 0
    total_steps: int = 0
    images: int = 0  # images trained on in this invocation, over all ranks
    skipped: dict[str, str] = field(default_factory=dict)  # source -> reason, each source once
    seconds: float = 0.0
    last_metrics: dict[str, float] = field(default_factory=dict)
    exported: list[Path] = field(default_factory=list)


def train(
    method: Method,
    dataset: Dataset,
    config: LoopConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_fingerprint: str = "",
) -> TrainSummary:
    """Train `method` on `dataset` (items as data.ImageDataset makes them) into `run_dir`.

    With `resume`, continue from the newest checkpoint in `run_dir` (refused if the data differ:
    `data_fingerprint` identifies them). Under torchrun every rank calls this.
    """
    config.validate()
    run_dir = Path(run_dir)
    device = resolve_device(config.device, local_rank())
    ctx = init_distributed(device)
    steps_per_epoch = len(dataset) // config.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(
            f"{len(dataset)} images do not fill one batch of {config.batch_size}; "
            "lower --batch-size or add images"
        )
    if config.batch_size % ctx.world_size:
        raise ConfigError(
            f"batch size {config.batch_size} must be divisible by the {ctx.world_size} ranks"
        )
    total = config.max_steps or config.epochs * steps_per_epoch
    warmup = min(total, round(config.warmup_epochs * steps_per_epoch))

    module = method.model.to(device)
    model: nn.Module = module
    if ctx.world_size > 1:
        module = make_global(module, device)  # BatchNorm statistics over the global batch
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(module, device_ids=device_ids)
    if config.compile:
        # BiT-R50x1 training at 224 on 2 CPU cores: 1.06-1.2x eager (channels-last), after about two
        # minutes of compilation. Not resumable with another setting: the numbers differ.
        model = torch.compile(model)
    peak_lr = scaled_learning_rate(config.lr, config.batch_size, config.lr_scaling)
    optimizer = build_optimizer(
        config.optimizer, module, peak_lr, config.weight_decay, config.momentum
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, warmup, total)
    )
    step, consumed = 0, 0
    if resume:
        step, consumed = _restore(run_dir, module, optimizer, scheduler, data_fingerprint)

    summary = TrainSummary(run_dir=run_dir, start_step=step, step=step, total_steps=total)
    sampler = EpochBatchSampler(
        len(dataset), config.batch_size, ctx.rank, ctx.world_size, config.seed
    )
    loader = _loader(dataset, sampler, config.workers, device)
    metrics = MetricsLog(run_dir, step, config.tensorboard) if ctx.is_main else None
    window = _MetricWindow()
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if config.precision == "bf16"
        else contextlib.nullcontext()
    )

    def checkpoint() -> None:
        if ctx.is_main:
            state = {
                "model": module.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "batches_consumed": consumed,
                "data_fingerprint": data_fingerprint,
            }
            save_checkpoint(run_dir, step, state, keep=config.keep_checkpoints)
        ctx.barrier()

    started = time.perf_counter()
    model.train()
    show = config.progress and ctx.is_main
    with progress_bar(total, "pretraining", enabled=show, completed=step) as advance:
        while step < total:
            sampler.set_position(consumed)
            step_at_pass_start = step
            for batch in loader:
                consumed += 1
                _note_skipped(batch["errors"], summary.skipped)
                n = 0 if batch["tensor"] is None else batch["tensor"].shape[0]
                n = ctx.min_int(n, device)  # every rank trains on the same local batch size
                if n < 2:
                    log.warning("step %d: fewer than 2 readable images in the batch; skipped", step)
                    continue
                images = batch["tensor"][:n].to(device, non_blocking=True)
                with torch.no_grad():
                    inputs = method.prepare(images, _step_seed(config.seed, step, ctx.rank))
                with autocast:
                    out = method.loss(model, inputs)
                _update(out, optimizer, scheduler, module, config.clip_grad_norm)
                step += 1
                summary.images += n * ctx.world_size
                window.add(out, n * ctx.world_size)
                if show:  # .item() waits for the device: only where a bar shows it
                    advance(1, n * ctx.world_size, f"loss {out.loss.item():.4f}")
                if step % config.log_every == 0 or step == total:
                    row = {"step": step, "epoch": consumed / steps_per_epoch}
                    row |= window.flush(ctx, device)
                    row["lr"] = optimizer.param_groups[0]["lr"]
                    summary.last_metrics = row
                    if metrics is not None:
                        metrics.write(row)
                if step % config.checkpoint_every == 0 or step == total:
                    checkpoint()
                if step >= total:
                    break
            if step == step_at_pass_start:
                raise ImageReadError(
                    f"no batch of the data could be trained on ({len(summary.skipped)} unreadable "
                    f"of {len(dataset)} images; first: {first_items(list(summary.skipped), 3)})"
                )
    if metrics is not None:
        metrics.close()
    summary.step = step
    summary.seconds = time.perf_counter() - started
    if ctx.world_size > 1:
        merged: dict[str, str] = {}
        for part in ctx.gather(summary.skipped):
            merged.update(part)
        summary.skipped = merged
    if ctx.is_main:
        summary.exported = method.export(module, run_dir)
    ctx.barrier()
    return summary


def _update(out: MethodOutput, optimizer, scheduler, module: nn.Module, clip: float | None) -> None:
    """Backward, optional clipping (the norm joins the metrics), optimiser and schedule step."""
    optimizer.zero_grad(set_to_none=True)
    out.loss.backward()
    if clip is not None:
        out.metrics["grad_norm"] = nn.utils.clip_grad_norm_(module.parameters(), clip)
    optimizer.step()
    scheduler.step()


def _restore(run_dir: Path, module, optimizer, scheduler, data_fingerprint: str) -> tuple[int, int]:
    checkpoints = list_checkpoints(run_dir)
    if not checkpoints:
        log.warning("%s: no checkpoint yet; starting from step 0", run_dir)
        return 0, 0
    state = load_checkpoint(checkpoints[-1])
    if state.get("data_fingerprint", "") != data_fingerprint:
        raise ConfigError(
            f"--resume: the data differ from those {run_dir} was trained on (another set of "
            "images); an exact continuation needs the same data"
        )
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("resumed from %s", checkpoints[-1])
    return int(state["step"]), int(state["batches_consumed"])


def _loader(dataset: Dataset, sampler, workers: int | None, device: torch.device) -> DataLoader:
    workers = default_workers() if workers is None else workers
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate_items,
        pin_memory=device.type == "cuda",
        worker_init_fn=worker_init if workers else None,
        persistent_workers=workers > 0,  # the sampler is iterated in this process: still exact
        prefetch_factor=4 if workers else None,
    )


def _step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the random augmentation of one step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _note_skipped(errors: list[tuple[str, str]], skipped: dict[str, str]) -> None:
    for source, reason in errors:
        if source not in skipped:  # an unreadable file is reported once, not every epoch
            log.warning("skipped %s", skip_message(source, reason))
            skipped[source] = reason


class _MetricWindow:
    """Image-weighted means of the loss and metrics since the last logged step."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.images = 0
        self.started = time.perf_counter()

    def add(self, out: MethodOutput, images: int) -> None:
        values = {"loss": out.loss, **out.metrics}
        for key, value in values.items():
            value = value.detach().float() * images
            self.sums[key] = self.sums[key] + value if key in self.sums else value
        self.images += images

    def flush(self, ctx: DistContext, device: torch.device) -> dict[str, float]:
        keys = sorted(self.sums)
        means = ctx.mean(torch.stack([self.sums[k] for k in keys]).to(device)) / self.images
        seconds = time.perf_counter() - self.started
        row = {"images_per_s": self.images / seconds} | dict(zip(keys, means.tolist(), strict=True))
        self.__init__()
        return row
