"""Devices and torchrun process groups: one place that reads torchrun's environment."""

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from medfound.errors import ConfigError, MedfoundError


class RankFailure(MedfoundError):
    """What every rank raises when rank 0 failed in a part only it runs."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job (rank 0 of 1 when not under torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on the rank that merges outputs and prints progress."""
        return self.rank == 0

    def barrier(self) -> None:
        """Wait for every rank (no-op in a single process)."""
        if self.world_size > 1:
            dist.barrier()

    def min_int(self, value: int, device: torch.device) -> int:
        """The smallest of every rank's `value` (the value itself in a single process)."""
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
        return int(tensor.item())

    def mean(self, tensor: torch.Tensor) -> torch.Tensor:
        """The element-wise mean of `tensor` over ranks (a copy; `tensor` itself in one process)."""
        if self.world_size == 1:
            return tensor
        tensor = tensor.clone()
        dist.all_reduce(tensor)
        return tensor / self.world_size

    def gather(self, obj) -> list:
        """Every rank's `obj`, in rank order (just [obj] in a single process)."""
        if self.world_size == 1:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def on_main(self, fn):
        """Run `fn()` on rank 0 only and return its result on every rank; a failure there is raised
        on every rank (as a RankFailure naming it), so no rank waits forever at the next collective."""
        result, failure = None, None
        if self.is_main:
            try:
                result = fn()
            except Exception as exc:
                if self.world_size == 1:
                    raise
                # A user error keeps its type and message; anything else is named.
                failure = (
                    exc
                    if isinstance(exc, MedfoundError)
                    else RankFailure(f"rank 0 failed: {type(exc).__name__}: {exc}")
                )
        result, failure = self.broadcast((result, failure))
        if failure is not None:
            raise failure
        return result

    def broadcast(self, obj):
        """Rank 0's `obj` on every rank (`obj` itself in a single process)."""
        if self.world_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """'auto' -> this rank's GPU if there is one, else CPU; 'cuda' -> this rank's GPU; or as given."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda: no CUDA device is available here")
        return torch.device("cuda", local_rank)
    if name.startswith("cuda:") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(
            f"--device {name}: under torchrun every rank would use that one GPU; "
            "pass --device cuda (each rank takes the GPU of its LOCAL_RANK)"
        )
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name!r}: {exc}") from exc


def init_distributed(device: torch.device) -> DistContext:
    """Join the torchrun process group if WORLD_SIZE > 1 (NCCL on GPU, gloo on CPU).

    On CUDA the rank's device becomes the current one and is bound to the group (`device_id`):
    without that, NCCL's object collectives (all_gather_object) put every rank's tensors on GPU 0.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistContext()
    ctx = DistContext(
        rank=int(os.environ["RANK"]),
        world_size=world,
        local_rank=int(os.environ.get("LOCAL_RANK", "0")),
    )
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        if device.type == "cuda":
            dist.init_process_group(backend="nccl", device_id=device)
        else:
            dist.init_process_group(backend="gloo")
    return ctx


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[DistContext]:
    """`init_distributed` for the duration of a task: a group this call created is destroyed on the
    way out, on errors too (a rank that raises must not leave its peers' group half open)."""
    created = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized()
    ctx = init_distributed(device)
    try:
        yield ctx
    finally:
        if created and dist.is_initialized():
            dist.destroy_process_group()


def default_workers() -> int:
    """Decoding workers per rank: half of this rank's share of the cores (the model needs the rest),
    at least 1, at most 8. torchrun's LOCAL_WORLD_SIZE says how many ranks share this machine."""
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, min(8, (os.cpu_count() or 2) // (2 * ranks_here)))


def local_rank() -> int:
    """torchrun's LOCAL_RANK (0 outside torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))
