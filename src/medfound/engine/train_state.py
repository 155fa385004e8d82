"""What a training checkpoint holds, in one object: `TrainState.state_dict()` / `load_state_dict()`.

Shared state (model, optimiser, schedule, data position) is the same on every rank and saved once.
Per-rank state is saved for every rank: each rank's random-number generators (dropout, anything a
method draws outside the seeded augmentation) and its open metric window (so a logged row that spans a
resume still averages every step it claims). A run resumed on the same number of ranks restores each
rank's own; on another number, rank r takes rank r's if it existed, else rank 0's (said in the log).
"""

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from medfound.engine.checkpoint import restore_rng, rng_state
from medfound.engine.distributed import DistContext
from medfound.engine.metrics_log import MetricWindow
from medfound.engine.validation import ValidationTracker
from medfound.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class TrainState:
    """The mutable state of a run: the trained module, its optimiser and schedule, and its position."""

    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    data_fingerprint: str = ""
    step: int = 0
    batches_consumed: int = 0
    window: MetricWindow = field(default_factory=MetricWindow)
    validation: ValidationTracker = field(default_factory=ValidationTracker)

    def state_dict(self, ctx: DistContext) -> dict:
        """The checkpoint's content; a collective call (every rank's part is gathered)."""
        mine = {"rng": rng_state(), "window": self.window.state_dict()}
        return {
            "model": self.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "step": self.step,
            "batches_consumed": self.batches_consumed,
            "data_fingerprint": self.data_fingerprint,
            "validation": self.validation.state_dict(),
            "ranks": ctx.gather(mine),
        }

    def load_state_dict(self, state: dict, ctx: DistContext) -> None:
        """Continue from `state`; refused when it was made on other data."""
        if state.get("data_fingerprint", "") != self.data_fingerprint:
            raise ConfigError(
                "--resume: the data differ from those the run was trained on (another set of "
                "images); an exact continuation needs the same data"
            )
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = int(state["step"])
        self.batches_consumed = int(state["batches_consumed"])
        self.validation.load_state_dict(state.get("validation", {}))  # absent: no validation yet
        if "ranks" not in state:
            raise ConfigError(
                "--resume: the checkpoint was written by an older medfound (no per-rank state); "
                "start a new run"
            )
        ranks = state["ranks"]
        if len(ranks) != ctx.world_size and ctx.is_main:
            log.warning(
                "resuming a run of %d rank(s) on %d: ranks without a saved state take rank 0's "
                "random-number state",
                len(ranks),
                ctx.world_size,
            )
        mine = ranks[ctx.rank] if ctx.rank < len(ranks) else ranks[0]
        restore_rng(mine["rng"])
        self.window.load_state_dict(mine["window"])
