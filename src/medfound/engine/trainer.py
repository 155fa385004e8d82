"""The one training loop every method uses: pretraining (SimCLR, Genesis) and supervised fine-tuning
(classification, segmentation).

A method (methods/) supplies the trainable module, a `prepare` step that turns a batch of images (and
their targets, for labelled data) into its inputs (SimCLR's two views, Genesis's corrupted volumes,
augmented images with their labels; run without gradients, in float32) and a `loss`
(methods/base.py's `Method`; a supervised `ScoredMethod` is validated by its score). The loop owns
everything else: devices and DDP under torchrun (gloo on CPU, NCCL on GPU, BatchNorm statistics made
global), bf16 autocast, the optimiser and its schedule (warmup-cosine, step or plateau), gradient
clipping, metrics, a progress bar on rank 0, atomic checkpoints and exact resumption, and optionally
validation on held-out data every N steps (engine/validation.py) with the best weights kept and early
stopping.

Exactness: the data order is a function of (seed, epoch) and the number of batches consumed
(engine/sampling.py), each step's random augmentation is seeded from (seed, step, rank), and a
checkpoint holds every rank's random-number states and open metric window (engine/train_state.py), so
a run resumed from a checkpoint repeats what an uninterrupted run would have done.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset

from medfound.engine.checkpoint import load_checkpoint, load_newest_checkpoint, save_checkpoint
from medfound.engine.distributed import DistContext, distributed, local_rank, resolve_device
from medfound.engine.global_batchnorm import make_global
from medfound.engine.loader import autocast, build_loader
from medfound.engine.loop_config import RESUMABLE_FIELDS, LoopConfig
from medfound.engine.metrics_log import MetricsLog
from medfound.engine.optim import build_optimizer, scaled_learning_rate, schedule_multiplier
from medfound.engine.progress import progress_bar
from medfound.engine.run_folder import claim_run_folder
from medfound.engine.sampling import EpochBatchSampler
from medfound.engine.train_state import TrainState
from medfound.engine.validation import ValidationTracker, Validator, prepare
from medfound.errors import ConfigError, ImageReadError, first_items, skip_message
from medfound.files import atomic_write, remove_temporaries
from medfound.methods.base import Method, MethodOutput

log = logging.getLogger(__name__)


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
    best_step: int | None = None  # the step of the best validation (None: no validation)
    stopped_early: bool = False


def train(
    method: Method,
    dataset: Dataset,
    config: LoopConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    data_fingerprint: str = "",
    val_dataset: Dataset | None = None,
) -> TrainSummary:
    """Train `method` on `dataset` (items as data.ImageDataset makes them, with a `target` each
    for labelled data) into `run_dir`.

    A new run needs an empty (or absent) `run_dir` and saves `config` there; with `resume`, continue
    from the newest readable checkpoint in `run_dir` (refused if a setting outside RESUMABLE_FIELDS or
    the data differ: `data_fingerprint` identifies them). Under torchrun every rank calls this.
    With `config.validate_every`, the method's loss on `val_dataset` (a ScoredMethod's score) is
    computed every that many steps and at the end; the best weights are kept
    (RUN_DIR/checkpoints/best-step-N.pt) and exported.
    A dataset whose items hold several samples (`samples_per_item`, e.g. the cubes of one volume)
    contributes batch_size / samples_per_item items to each batch.
    """
    config.validate()
    if config.validate_every is not None and val_dataset is None:
        raise ConfigError("validate_every is set but there are no validation data")
    run_dir = Path(run_dir)
    device = resolve_device(config.device, local_rank())
    with distributed(device) as ctx:
        loop = _Loop(method, dataset, config, run_dir, ctx, device, data_fingerprint, val_dataset)
        # Claimed once the settings checked out: a failed start leaves the folder free.
        claim_run_folder(run_dir, config, resume=resume, may_change=RESUMABLE_FIELDS, ctx=ctx)
        if resume:
            loop.restore()
        return loop.run()


class _Loop:
    """One run: set up once, then steps, logging and checkpoints until the last step."""

    def __init__(
        self, method, dataset, config: LoopConfig, run_dir: Path, ctx, device, fingerprint, val_data
    ):
        self.method, self.dataset, self.config = method, dataset, config
        self.run_dir, self.ctx, self.device = run_dir, ctx, device
        items = _items_per_batch(config.batch_size, getattr(dataset, "samples_per_item", 1))
        self.steps_per_epoch = len(dataset) // items
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"{len(dataset)} items do not fill one batch of {items}; "
                "lower --batch-size or add data"
            )
        if items % ctx.world_size:
            raise ConfigError(
                f"{items} items per batch (batch size {config.batch_size}) must be divisible by "
                f"the {ctx.world_size} ranks"
                + (
                    " (change the batch size or the samples per item)"
                    if items != config.batch_size
                    else ""
                )
            )
        self.total = config.max_steps or config.epochs * self.steps_per_epoch
        warmup = min(self.total, round(config.warmup_epochs * self.steps_per_epoch))
        module, self.model = _wrap(method.model.to(device), device, ctx, config.compile)
        peak_lr = scaled_learning_rate(config.lr, config.batch_size, config.lr_scaling)
        optimizer = build_optimizer(
            config.optimizer,
            module,
            peak_lr,
            config.weight_decay,
            config.momentum,
            config.lars_exclude,
        )
        # The plateau schedule reads the tracker's decay factor.
        validation = ValidationTracker(higher_is_better=getattr(method, "higher_is_better", False))
        multiplier = schedule_multiplier(
            config.schedule,
            warmup,
            self.total,
            decay_factor=config.decay_factor,
            decay_every=config.decay_every,
            plateau_factor=lambda: validation.lr_factor,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
        self.multiplier = multiplier
        self.state = TrainState(
            module, optimizer, scheduler, data_fingerprint=fingerprint, validation=validation
        )
        keyed = getattr(dataset, "keyed_by_epoch", False)
        self.sampler = EpochBatchSampler(
            len(dataset), items, ctx.rank, ctx.world_size, config.seed, keyed_by_epoch=keyed
        )
        self.validator = (
            Validator(method, val_data, config, ctx, device, items)
            if config.validate_every is not None
            else None
        )

    def restore(self) -> None:
        """Continue from the newest readable checkpoint (a warning when there is none yet)."""
        # Rank 0 chooses (falling back past unreadable files) and every rank loads that one file:
        # ranks choosing on their own could resume from different steps.
        chosen: dict = {}  # rank 0 keeps the state it read while choosing: one read, not two

        def choose() -> Path | None:
            remove_temporaries(self.run_dir / "checkpoints")  # a checkpoint cut short by a kill
            found = load_newest_checkpoint(self.run_dir)
            _drop_best_except(self.run_dir, after=found[1]["step"] if found else 0)
            if found is None:
                return None
            chosen["state"] = found[1]
            return found[0]

        path = self.ctx.on_main(choose)
        if path is None:
            log.warning("%s: no checkpoint yet; starting from step 0", self.run_dir)
            return
        state = chosen["state"] if "state" in chosen else load_checkpoint(path)
        self.state.load_state_dict(state, self.ctx)
        log.info("resumed from %s", path)

    def run(self) -> TrainSummary:
        """Train to the last step, export on rank 0; the summary covers this invocation."""
        config, ctx, state = self.config, self.ctx, self.state
        summary = TrainSummary(
            run_dir=self.run_dir, start_step=state.step, step=state.step, total_steps=self.total
        )
        loader = build_loader(
            self.dataset, self.device, config.workers, batch_sampler=self.sampler, seed=config.seed
        )
        started = time.perf_counter()
        self.model.train()
        show = config.progress and ctx.is_main
        metrics = MetricsLog(self.run_dir, state.step, config.tensorboard) if ctx.is_main else None
        self.val_log = None
        self.val_headline = ""  # the last validation's figure, shown on the progress line
        if ctx.is_main and self.validator is not None:
            self.val_log = MetricsLog(self.run_dir, state.step, config.tensorboard, "validation")
        try:
            with progress_bar(self.total, "training", enabled=show, completed=state.step) as bar:
                while state.step < self.total and not state.validation.stopped:
                    self._one_pass(loader, summary, metrics, bar if show else None)
        finally:
            for log_ in (metrics, self.val_log):
                if log_ is not None:
                    log_.close()
        summary.step = state.step
        summary.seconds = time.perf_counter() - started
        if self.validator is not None:
            summary.skipped.update(self.validator.skipped)
        if ctx.world_size > 1:
            merged: dict[str, str] = {}
            for part in ctx.gather(summary.skipped):
                merged.update(part)
            summary.skipped = merged
        summary.exported = ctx.on_main(self._export)
        validated = self.validator is not None and state.validation.has_best
        summary.best_step = state.validation.best_step if validated else None
        summary.stopped_early = state.validation.stopped
        return summary

    def _export(self) -> list[Path]:
        """The method's artefacts, from the best validated weights when there was validation."""
        validation = self.state.validation
        best = getattr(self.method, "export_best", True)  # a monitor only (a probe): the last
        if self.validator is not None and validation.has_best and best:
            path = best_weights_path(self.run_dir, validation.best_step)
            if not path.exists():  # only if removed by hand
                raise ConfigError(f"{path}: the best validation's weights are missing")
            self.state.module.load_state_dict(load_checkpoint(path)["model"])
            log.info("exporting the best validated weights (step %d)", validation.best_step)
        return self.method.export(self.state.module, self.run_dir)

    def _one_pass(self, loader, summary: TrainSummary, metrics, advance) -> None:
        """Steps until the end of the epoch or of the run; an epoch with no usable batch is an error."""
        state, ctx = self.state, self.ctx
        self.sampler.set_position(state.batches_consumed)
        step_at_start = state.step
        for batch in loader:
            state.batches_consumed += 1
            _note_skipped(batch["errors"], summary.skipped)
            # a method may take several rows per image (SimCLR's view pairs cut in the workers)
            per = getattr(self.method, "rows_per_item", 1)
            n = 0 if batch["tensor"] is None else batch["tensor"].shape[0] // per
            n = ctx.min_int(n, self.device)  # every rank trains on the same local batch size
            if n < 2:
                log.warning(
                    "step %d: fewer than 2 readable images in the batch; skipped", state.step
                )
                continue
            targets = batch.get("target")
            rows = batch["tensor"][: n * per]
            out = self._step(rows, None if targets is None else targets[:n])
            summary.images += n * ctx.world_size
            if advance is not None:  # .item() waits for the device: only where a bar shows it
                shown = f"loss {out.loss.item():.4f}"
                advance(1, n * ctx.world_size, f"{shown} | {self.val_headline}".rstrip(" |"))
            self._log(out, n * ctx.world_size, summary, metrics)
            last = state.step == self.total
            every = self.config.validate_every
            if self.validator is not None and (state.step % every == 0 or last):
                self._validate()
            stop = last or state.validation.stopped
            if state.step % self.config.checkpoint_every == 0 or stop:
                self._checkpoint()
            if stop:
                return
        if state.step == step_at_start:
            raise ImageReadError(
                f"no batch of the data could be trained on ({len(summary.skipped)} unreadable "
                f"of {len(self.dataset)} images; first: {first_items(list(summary.skipped), 3)})"
            )

    def _step(self, images: torch.Tensor, targets: torch.Tensor | None) -> MethodOutput:
        """Prepare, forward, backward, optional clipping, optimiser and schedule step."""
        state, config = self.state, self.config
        images = images.to(self.device, non_blocking=True)
        seed = _step_seed(config.seed, state.step, self.ctx.rank)
        with torch.no_grad():
            inputs = prepare(self.method, images, seed, targets, self.device)
        with autocast(self.device, config.precision):
            out = self.method.loss(self.model, inputs)
        state.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if config.clip_grad_norm is not None:
            out.metrics["grad_norm"] = nn.utils.clip_grad_norm_(
                state.module.parameters(), config.clip_grad_norm
            )
        state.optimizer.step()
        state.scheduler.step()
        state.step += 1
        return out

    def _log(self, out: MethodOutput, images: int, summary: TrainSummary, metrics) -> None:
        state = self.state
        state.window.add({"loss": out.loss, **out.metrics}, images)
        if state.step % self.config.log_every == 0 or state.step == self.total:
            row = {"step": state.step, "epoch": state.batches_consumed / self.steps_per_epoch}
            row |= state.window.flush(self.ctx, self.device)
            row["lr"] = state.optimizer.param_groups[0]["lr"]
            summary.last_metrics = row
            if metrics is not None:
                metrics.write(row)

    def _validate(self) -> None:
        """Held-out loss or score; the best weights saved; plateau and early-stopping counters
        updated."""
        state = self.state
        value = self.validator(state.module)
        if value is None:  # not defined this time: logged, not counted
            self._write_validation({"step": state.step, self.validator.name: None})
            return
        factor = state.validation.lr_factor
        improved = state.validation.update(value, state.step, self.config)
        if state.validation.lr_factor != factor:  # a plateau decay applies from the next step on
            rate = self.multiplier(state.scheduler.last_epoch)
            for group, base in zip(
                state.optimizer.param_groups, state.scheduler.base_lrs, strict=True
            ):
                group["lr"] = base * rate
        if improved:
            name = self.validator.name
            weights = {"model": state.module.state_dict(), "step": state.step, name: value}
            path = best_weights_path(self.run_dir, state.step)
            self.ctx.on_main(lambda: atomic_write(path, lambda tmp: torch.save(weights, tmp)))
        name = self.validator.name
        row = {"step": state.step, name: value, f"best_{name}": state.validation.best}
        row["lr_factor"] = state.validation.lr_factor
        self._write_validation(row)
        if state.validation.stopped:
            log.info(
                "early stopping at step %d: no improvement in %d validations (best %.6g at %d)",
                state.step,
                state.validation.since_best,
                state.validation.best,
                state.validation.best_step,
            )

    def _write_validation(self, row: dict) -> None:
        """A validation row (with the method's other figures) to the log, and a line saying it."""
        row = row | {f"val_{k}": v for k, v in self.validator.details.items()}
        shown = {k: v for k, v in row.items() if k not in ("step", "lr_factor")}
        texts = [f"{k} {v:.4g}" if v is not None else f"{k} -" for k, v in shown.items()]
        self.val_text, self.val_headline = ", ".join(texts), texts[0]
        if self.val_log is not None:
            self.val_log.write(row)
            log.info("step %d: %s", row["step"], self.val_text)

    def _checkpoint(self) -> None:
        content = self.state.state_dict(self.ctx)  # collective: every rank's part is gathered

        def save() -> None:
            save_checkpoint(
                self.run_dir, self.state.step, content, keep=self.config.keep_checkpoints
            )
            if self.validator is not None:  # the checkpoint now names the best: drop older ones
                _drop_best_except(self.run_dir, keep=self.state.validation.best_step)

        self.ctx.on_main(save)


def _wrap(module: nn.Module, device: torch.device, ctx: DistContext, compile: bool):
    """(the module whose state is saved, the callable that trains it: DDP and/or compiled)."""
    model: nn.Module = module
    if ctx.world_size > 1:
        module = make_global(module, device)  # BatchNorm statistics over the global batch
        device_ids = [device.index] if device.type == "cuda" else None
        model = DistributedDataParallel(module, device_ids=device_ids)
    if compile:
        # BiT-R50x1 training at 224 on 2 CPU cores: 1.06-1.2x eager (channels-last), after about two
        # minutes of compilation. Not resumable with another setting: the numbers differ.
        model = torch.compile(model)
    return module, model


def best_weights_path(run_dir: Path, step: int) -> Path:
    """Where a validated run keeps the weights of its best validation, at `step`."""
    return Path(run_dir) / "checkpoints" / f"best-step-{step:08d}.pt"


def best_weights_files(run_dir: Path) -> list[Path]:
    """The best-weights files of a run, by step (after a checkpoint: only the best validation's)."""
    return sorted((Path(run_dir) / "checkpoints").glob("best-step-*.pt"))


def _drop_best_except(run_dir: Path, keep: int | None = None, after: int | None = None) -> None:
    """Remove best-weights files other than step `keep`'s, or those written after step `after`.

    A new best is written under its own step's name and the previous one removed only once a
    checkpoint records the new best, so a kill at any moment leaves the file the checkpoint's
    validation state names; on resume, files of steps about to be redone are removed."""
    for path in best_weights_files(run_dir):
        step = int(path.stem.rsplit("-", 1)[1])
        if (keep is not None and step != keep) or (after is not None and step > after):
            path.unlink(missing_ok=True)


def _items_per_batch(batch_size: int, samples_per_item: int) -> int:
    if batch_size % samples_per_item:
        raise ConfigError(
            f"batch size {batch_size} must be a multiple of the {samples_per_item} samples each "
            "item gives (e.g. cubes per volume)"
        )
    return batch_size // samples_per_item


def _step_seed(seed: int, step: int, rank: int) -> int:
    """A seed for the random augmentation of one step on one rank."""
    return int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0])


def _note_skipped(errors: list[tuple[str, str]], skipped: dict[str, str]) -> None:
    for source, reason in errors:
        if source not in skipped:  # an unreadable file is reported once, not every epoch
            log.warning("skipped %s", skip_message(source, reason))
            skipped[source] = reason
