"""Scratch buffers reused from call to call by the batched Genesis transforms.

On the CPU a freshly allocated tensor of a few MB comes straight from the operating system, and each
of its 4 KB pages costs a page fault on first touch: about 1 us each on this kind of machine, which
made the transforms' passes twice as slow. Reusing buffers avoids it, at the price of keeping them:
about 6 MB per shuffled 64x64x32 cube of the largest batch seen (16 at most at a time), until
`release()`. Each thread has its own; other devices get plain tensors (their caching allocators
already reuse memory).
"""

import math
import threading

import torch

_LOCAL = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> torch.Tensor:
    """An uninitialised tensor of `shape`, in the same memory at every call with this `name`.

    Only valid until the next call with the same name (in this thread).
    """
    if torch.device(device).type != "cpu":
        return torch.empty(shape, dtype=dtype, device=device)
    buffers = _LOCAL.__dict__.setdefault("buffers", {})
    numel = math.prod(shape)
    buffer = buffers.get((name, dtype))
    if buffer is None or buffer.numel() < numel:
        # A quarter more: sizes that vary from call to call (box counts) then rarely regrow it.
        # Never an inference tensor (made under inference_mode, it could not be written outside).
        with torch.inference_mode(False):
            buffer = buffers[name, dtype] = torch.empty(numel + numel // 4, dtype=dtype)
    return buffer[:numel].view(shape)


def release() -> None:
    """Free this thread's scratch buffers (they are made again when next needed)."""
    _LOCAL.__dict__.pop("buffers", None)
