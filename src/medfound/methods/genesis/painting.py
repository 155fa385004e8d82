"""In-painting and out-painting (p 0.9 together; out-painting with p 0.8, else in-painting).

In-painting replaces up to 5 boxes (a further one while U < 0.95), sides in [dim//6, dim//3], with
noise: a median ~6% of a 64x64x32 cube. Out-painting replaces the whole cube with noise and restores up
to 5 windows of the original, sides dim - [3 dim//7, 4 dim//7]: a median ~32% kept. Boxes start at
least 3 voxels from the border, as in the original. Noise is uniform in [0, 1) (the original's), or a
constant `fill`. All boxes of a batch become one mask by coordinate comparisons: no loop per box.
"""

from dataclasses import dataclass

import torch

MAX_BOXES = 5


@dataclass
class PaintingParams:
    """starts, sides: (B, 5, dims) boxes; active: (B, 5); mode: (B,) 0 none, 1 in-, 2 out-painting."""

    starts: torch.Tensor
    sides: torch.Tensor
    active: torch.Tensor
    mode: torch.Tensor
    noise_seed: int


def _boxes(batch: int, dims: tuple[int, ...], low, high, generator: torch.Generator):
    """Box sides uniform in [low(d), high(d)] and starts in [3, d - side - 3] (clamped to fit)."""
    sides, starts = [], []
    for d in dims:
        lo, hi = max(1, low(d)), max(1, min(high(d), d))
        side = torch.randint(min(lo, hi), hi + 1, (batch, MAX_BOXES), generator=generator)
        first, last = torch.full_like(side, 3), d - side - 3
        first = torch.minimum(first, last.clamp_min(0))
        last = torch.maximum(last, first)
        u = torch.rand(batch, MAX_BOXES, generator=generator)
        starts.append(first + (u * (last - first + 1)).long().clamp_max(last - first))
        sides.append(side)
    return torch.stack(starts, -1), torch.stack(sides, -1)


def sample(
    shape: tuple[int, ...],
    generator: torch.Generator,
    p: float = 0.9,
    outpaint_p: float = 0.8,
    more_boxes_p: float = 0.95,
) -> PaintingParams:
    """Draw each sample's mode and boxes."""
    batch, dims = shape[0], tuple(shape[2:])
    painted = torch.rand(batch, generator=generator) < p
    outer = torch.rand(batch, generator=generator) < outpaint_p
    mode = torch.where(painted, torch.where(outer, 2, 1), 0)
    in_starts, in_sides = _boxes(batch, dims, lambda d: d // 6, lambda d: d // 3, generator)
    out_starts, out_sides = _boxes(
        batch, dims, lambda d: d - 4 * d // 7, lambda d: d - 3 * d // 7, generator
    )
    more = torch.rand(batch, MAX_BOXES - 1, generator=generator) < more_boxes_p
    active = torch.cat([torch.ones(batch, 1, dtype=torch.bool), more.cummin(dim=1).values], 1)
    outside = (mode == 2)[:, None, None]
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return PaintingParams(
        starts=torch.where(outside, out_starts, in_starts),
        sides=torch.where(outside, out_sides, in_sides),
        active=active,
        mode=mode,
        noise_seed=seed,
    )


def box_mask(spatial: tuple[int, ...], starts: torch.Tensor, sides: torch.Tensor, active):
    """(B, *spatial) True inside any active box."""
    mask = active.to(starts.device)
    mask = mask.view(*mask.shape, *([1] * len(spatial)))
    for d, n in enumerate(spatial):
        coord = torch.arange(n, device=starts.device)
        inside = (coord >= starts[..., d, None]) & (coord < (starts + sides)[..., d, None])
        view = [1] * len(spatial)
        view[d] = n
        mask = mask & inside.view(*inside.shape[:2], *view)
    return mask.any(dim=1)


def apply(x: torch.Tensor, params: PaintingParams, fill: float | None = None) -> torch.Tensor:
    """In-paint or out-paint each sample as drawn; `fill` None means uniform noise."""
    spatial = tuple(x.shape[2:])
    mask = box_mask(spatial, params.starts.to(x.device), params.sides.to(x.device), params.active)
    mask = mask[:, None]  # over channels
    if fill is None:
        generator = torch.Generator(device=x.device).manual_seed(params.noise_seed)
        noise = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    else:
        noise = torch.full_like(x, fill)
    mode = params.mode.to(x.device).view(-1, *([1] * (x.ndim - 1)))
    inpainted = torch.where(mask, noise, x)
    outpainted = torch.where(mask, x, noise)
    return torch.where(mode == 1, inpainted, torch.where(mode == 2, outpainted, x))
