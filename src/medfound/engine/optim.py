"""Optimisers and learning-rate schedules of the pretraining recipes (REFERENCE.md section 2).

LARS is written here rather than taken from timm because timm's `Lars` follows NVIDIA's LARC: its trust
ratio divides by ||g|| + wd * ||w|| instead of ||g + wd * w||, and it applies the learning rate after
the momentum buffer, whereas SimCLR accumulates learning-rate-scaled steps in the velocity (which
differs whenever the learning rate changes, i.e. all through warmup and cosine decay).
"""

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

from medfound.errors import ConfigError

_NORMS = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)


class LARS(torch.optim.Optimizer):
    """Layer-wise adaptive rate scaling as SimCLR uses it.

    For each parameter not in an `exclude` group: g <- g + wd * w, then the step is scaled by
    trust_coefficient * ||w|| / ||g|| (1 when either norm is 0). Excluded parameters (norms, biases)
    get neither weight decay nor adaptation: a plain momentum update. v <- m * v + lr_scaled * g; w <- w - v.
    """

    def __init__(
        self,
        params: Iterable,
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 1e-6,
        trust_coefficient: float = 1e-3,
        nesterov: bool = False,
    ):
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "weight_decay": weight_decay,
            "trust_coefficient": trust_coefficient,
            "nesterov": nesterov,
            "exclude": False,
        }
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                lr = group["lr"]
                if not group["exclude"]:
                    grad = grad.add(p, alpha=group["weight_decay"])
                    w_norm, g_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(grad)
                    trust = group["trust_coefficient"] * w_norm / g_norm
                    ratio = torch.where((w_norm > 0) & (g_norm > 0), trust, torch.ones_like(trust))
                    lr = lr * ratio
                state = self.state[p]
                velocity = state.get("velocity")
                if velocity is None:
                    velocity = state["velocity"] = torch.zeros_like(p)
                velocity.mul_(group["momentum"]).add_(grad * lr)
                update = velocity * group["momentum"] + grad * lr if group["nesterov"] else velocity
                p.sub_(update)
        return loss


EXCLUDE_RULES = ("remedis", "norms")


def parameter_groups(model: nn.Module, weight_decay: float, exclude: str = "norms") -> list[dict]:
    """Two groups: weights (decayed, adapted by LARS) and the excluded parameters (neither).

    `exclude`: "norms" leaves out every normalisation layer's parameters (BatchNorm, GroupNorm incl.
    timm's GroupNormAct, LayerNorm; found by type), every bias and every 1-D parameter. "remedis"
    leaves out what REMEDIS's name regexes (`batch_normalization`, `bias`) matched in TensorFlow:
    BatchNorm parameters and the biases of other layers; BiT's GroupNorm gamma and beta (TF names
    without either word) were decayed and adapted, and are here too.
    """
    if exclude not in EXCLUDE_RULES:
        raise ConfigError(
            f"lars_exclude must be one of {', '.join(EXCLUDE_RULES)}, got {exclude!r}"
        )
    decayed, excluded, seen = [], [], set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:  # a shared parameter: once
                continue
            seen.add(id(param))
            if exclude == "remedis":
                batch_norm = isinstance(module, nn.modules.batchnorm._NormBase)
                is_excluded = batch_norm or (name == "bias" and not isinstance(module, _NORMS))
            else:
                is_excluded = isinstance(module, _NORMS) or name.endswith("bias") or param.ndim <= 1
            (excluded if is_excluded else decayed).append(param)
    return [
        {"params": decayed, "weight_decay": weight_decay, "exclude": False},
        {"params": excluded, "weight_decay": 0.0, "exclude": True},
    ]


def scaled_learning_rate(base: float, batch_size: int, rule: str = "linear") -> float:
    """SimCLR's scaling: base * batch / 256 ("linear") or base * sqrt(batch) ("sqrt"); "none": base."""
    if rule == "linear":
        return base * batch_size / 256
    if rule == "sqrt":
        return base * math.sqrt(batch_size)
    if rule == "none":
        return base
    raise ConfigError(f"learning-rate scaling must be 'linear', 'sqrt' or 'none', got {rule!r}")


def warmup_cosine(step: int, warmup_steps: int, total_steps: int) -> float:
    """Multiplier of the peak rate: linear warmup from 0, then cosine decay to 0 at total_steps."""
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    if total_steps <= warmup_steps:
        return 1.0
    progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def schedule_multiplier(
    schedule: str,
    warmup_steps: int,
    total_steps: int,
    *,
    decay_factor: float = 0.5,
    decay_every: int | None = None,
    plateau_factor: Callable[[], float] = lambda: 1.0,
) -> Callable[[int], float]:
    """The peak rate's multiplier at each step, for LambdaLR.

    "warmup-cosine": `warmup_cosine`. "step": linear warmup, then x `decay_factor` every
    `decay_every` steps (Models Genesis's step decay). "plateau": linear warmup times
    `plateau_factor()`, which validation lowers when the held-out loss stops improving.
    """
    if schedule == "warmup-cosine":
        return lambda step: warmup_cosine(step, warmup_steps, total_steps)

    def warmup(step: int) -> float:
        return step / warmup_steps if warmup_steps > 0 and step < warmup_steps else 1.0

    if schedule == "step":
        if not decay_every:
            raise ConfigError("schedule step needs decay_every (steps between decays)")
        return lambda step: warmup(step) * decay_factor ** (step // decay_every)
    if schedule == "plateau":
        return lambda step: warmup(step) * plateau_factor()
    raise ConfigError(f"schedule must be warmup-cosine, step or plateau, got {schedule!r}")


def build_optimizer(
    name: str,
    model: nn.Module,
    lr: float,
    weight_decay: float,
    momentum: float = 0.9,
    exclude: str = "norms",
) -> torch.optim.Optimizer:
    """LARS (SimCLR's), SGD with momentum, or AdamW, over `parameter_groups(model, exclude)`."""
    groups = parameter_groups(model, weight_decay, exclude)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for group in groups:
        group.pop("exclude")
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ConfigError(f"optimizer must be lars, sgd or adamw, got {name!r}")
