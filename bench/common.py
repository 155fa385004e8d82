"""Shared helpers for the benchmarks: the GEMM reference rate and model FLOP counts."""

import time

import torch
from torch.utils.flop_counter import FlopCounterMode


def gemm_rate(n: int = 4096, dtype: torch.dtype = torch.float32, seconds: float = 4.0) -> float:
    """Sustained torch.mm rate in FLOP/s for n x n matrices (the machine's reference).

    Measured over windows of about a second and the best window is kept, as the model runs are
    best-of-N too: on a shared machine noise only ever slows a run down, so best sustained windows
    compare fairly where averages over different moments do not.
    """
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)  # warm-up
    best, start = 0.0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        reps, tick = 0, time.perf_counter()
        while reps < 2 or time.perf_counter() - tick < 1.0:
            torch.mm(a, b)
            reps += 1
        best = max(best, 2 * n**3 * reps / (time.perf_counter() - tick))
    return best


def model_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """FLOPs of one forward pass on `example` (counted by torch's FlopCounterMode)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model(example)
    return float(counter.get_total_flops())
