"""Shared helpers for the benchmarks: the GEMM reference rate and model FLOP counts."""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def gemm_rate(n: int = 4096, dtype: torch.dtype = torch.float32, seconds: float = 3.0) -> float:
    """Sustained torch.mm rate in FLOP/s for n x n matrices (the machine's reference)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - start)


def model_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward pass on `example` (counted by torch's FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(example)
    return float(counter.get_total_flops())
