"""The training loop's settings: a typed config every method's config extends.

Kept apart from the loop itself (engine/trainer.py) so that reading a config, or building the CLI's
options from it, imports no torch.
"""

from dataclasses import dataclass
from typing import Literal

from medfound.engine.config import setting
from medfound.errors import ConfigError


@dataclass
class LoopConfig:
    """The loop's settings, shared by every method's config (defaults: REMEDIS's SimCLR stage)."""

    batch_size: int = setting(512, "Global batch, summed over ranks (the lr scaling uses it)")
    epochs: int = setting(100, "Passes over the data")
    max_steps: int | None = setting(None, "Steps; overrides epochs (also the cosine's length)")
    optimizer: Literal["lars", "sgd", "adamw"] = setting("lars", "lars, sgd or adamw")
    lr: float = setting(0.3, "Base learning rate, before batch scaling")
    lr_scaling: Literal["linear", "sqrt", "none"] = setting(
        "linear", "linear or sqrt in batch/256, or none (lr as given)"
    )
    weight_decay: float = setting(1e-6, "Weight decay (not on what lars_exclude leaves out)")
    momentum: float = setting(0.9, "Momentum of lars and sgd")
    lars_exclude: Literal["norms", "remedis"] = setting(
        "norms",
        "Left out of weight decay and LARS adaptation: norms (every norm layer's parameters, "
        "biases, 1-D parameters) or remedis (BatchNorm and biases, as REMEDIS's name rule; "
        "GroupNorm decayed)",
    )
    warmup_epochs: float = setting(10.0, "Linear warmup, in epochs")
    schedule: Literal["warmup-cosine", "step", "plateau"] = setting(
        "warmup-cosine",
        "warmup-cosine; step (x decay-factor every decay-every steps); plateau (x decay-factor "
        "after plateau-patience validations without improvement); warmup applies to all",
    )
    decay_factor: float = setting(0.5, "Learning-rate factor of the step and plateau schedules")
    decay_every: int | None = setting(None, "Steps between the step schedule's decays")
    validate_every: int | None = setting(
        None, "Steps between validation passes on held-out data (none: no validation)"
    )
    plateau_patience: int = setting(5, "Validations without improvement before a plateau decay")
    early_stop_patience: int | None = setting(
        None, "Stop after this many validations without improvement (none: never)"
    )
    precision: Literal["fp32", "bf16"] = setting("fp32", "fp32 or bf16 (autocast)")
    compile: bool = setting(False, "torch.compile the model (minutes to compile once)")
    clip_grad_norm: float | None = setting(None, "Clip the gradient norm to this value")
    seed: int = setting(0, "Seed of data order, augmentation and random init")
    device: str = setting("auto", "auto, cpu, cuda or cuda:N")
    workers: int | None = setting(None, "Decoding workers per rank (none: half the cores, <= 8)")
    checkpoint_every: int = setting(500, "Steps between checkpoints")
    keep_checkpoints: int = setting(2, "Newest checkpoints kept")
    log_every: int = setting(10, "Steps between logged metric rows")
    progress: bool = setting(True, "Progress bar on rank 0")
    tensorboard: bool = setting(True, "TensorBoard events beside the CSV/JSONL metrics")

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
        self._validate_schedule()

    def _validate_schedule(self) -> None:
        for name in ("decay_every", "validate_every", "early_stop_patience"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if self.plateau_patience < 1:
            raise ConfigError(f"plateau_patience must be >= 1, got {self.plateau_patience}")
        if not 0 < self.decay_factor <= 1:
            raise ConfigError(f"decay_factor must be in (0, 1], got {self.decay_factor}")
        if self.schedule == "step" and self.decay_every is None:
            raise ConfigError("schedule step needs decay_every (steps between decays)")
        needs_validation = {
            "schedule plateau": self.schedule == "plateau",
            "early_stop_patience": self.early_stop_patience is not None,
        }
        for what, used in needs_validation.items():
            if used and self.validate_every is None:
                raise ConfigError(f"{what} needs validation: set validate_every (steps)")


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
