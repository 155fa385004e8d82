"""In-painting and out-painting (p 0.9 together; out-painting with p 0.8, else in-painting).

In-painting replaces up to 5 boxes (each, the first too, while U < 0.95), sides in [dim//6, dim//3], with
noise: a median ~6% of a 64x64x32 cube. Out-painting replaces the whole cube with noise and restores up
to 5 windows of the original, sides dim - [3 dim//7, 4 dim//7]: a median ~32% kept. Boxes start at
least 3 voxels from the border, as in the original. Noise is uniform in [0, 1) (the original's; here
in steps of 2^-16, from a quarter of torch.rand's random draws), or a constant `fill`.
A sample has at most 5 boxes, so each is a slice assignment: cheaper than a mask over the batch.
"""

from dataclasses import dataclass

import torch

from medfound.methods.genesis.scratch import scratch

MAX_BOXES = 5
NONE, INPAINT, OUTPAINT = 0, 1, 2


@dataclass
class PaintingParams:
    """mode: (B,) NONE, INPAINT or OUTPAINT; for the painted samples (mode > 0), in batch order:
    starts, sides (n, 5, dims) and active (n, 5) boxes; noise_seed draws the noise."""

    mode: torch.Tensor
    starts: torch.Tensor
    sides: torch.Tensor
    active: torch.Tensor
    noise_seed: int


def _side_ranges(dims: tuple[int, ...], outer: torch.Tensor):
    """(n, dims) lowest and highest box side of each painted sample, by its mode."""
    inner = torch.tensor([[d // 6, d // 3] for d in dims])
    window = torch.tensor([[d - 4 * d // 7, d - 3 * d // 7] for d in dims])
    ranges = torch.where(outer[:, None, None], window, inner).clamp(min=1)
    ranges = torch.minimum(ranges, torch.tensor(dims)[:, None])
    return ranges[..., 0], ranges[..., 1]


def sample(
    shape: tuple[int, ...],
    generator: torch.Generator,
    p: float = 0.9,
    outpaint_p: float = 0.8,
    more_boxes_p: float = 0.95,
) -> PaintingParams:
    """Draw each sample's mode, then boxes for the painted ones only."""
    batch, dims = shape[0], tuple(shape[2:])
    painted = torch.rand(batch, generator=generator) < p
    outer = torch.rand(batch, generator=generator) < outpaint_p
    mode = torch.where(painted, torch.where(outer, OUTPAINT, INPAINT), NONE)
    outer = outer[painted]
    n = len(outer)
    low, high = _side_ranges(dims, outer)
    u = torch.rand(n, MAX_BOXES, len(dims), 2, generator=generator)
    sides = low[:, None] + (u[..., 0] * (high - low + 1)[:, None]).long()
    sides = torch.minimum(sides, high[:, None])
    # Starts in [3, dim - side - 3], clamped where a box that far from the border cannot fit.
    limit = torch.tensor(dims) - sides
    first = torch.clamp(limit - 3, max=3).clamp(min=0)
    last = torch.maximum(limit - 3, first)
    starts = first + (u[..., 1] * (last - first + 1)).long()
    starts = torch.minimum(starts, last)
    # The original draws even in-painting's first box with p 0.95 (so 5% of in-paintings paint
    # nothing); out-painting always restores a first window, then further ones while U < 0.95.
    more = torch.rand(n, MAX_BOXES, generator=generator) < more_boxes_p
    more[:, 0] |= outer
    active = more.cummin(dim=1).values
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return PaintingParams(mode=mode, starts=starts, sides=sides, active=active, noise_seed=seed)


def box_mask(spatial: tuple[int, ...], starts: torch.Tensor, sides: torch.Tensor, active):
    """(n, *spatial) True inside any active box (to inspect or test the boxes)."""
    mask = active.to(starts.device)
    mask = mask.view(*mask.shape, *([1] * len(spatial)))
    for d, n in enumerate(spatial):
        coord = torch.arange(n, device=starts.device)
        inside = (coord >= starts[..., d, None]) & (coord < (starts + sides)[..., d, None])
        view = [1] * len(spatial)
        view[d] = n
        mask = mask & inside.view(*inside.shape[:2], *view)
    return mask.any(dim=1)


def fill_noise_(dest: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fill `dest` with uniform values k / 2^16 in [0, 1): four per 64-bit random draw (torch.rand
    draws one per value, twice the time here)."""
    count = dest.numel()
    bits = scratch("noise", ((count + 3) // 4,), torch.int64, dest.device)
    bits.random_(-(2**63), None, generator=generator)
    half = torch.tensor(0.5, dtype=dest.dtype, device=dest.device)
    signed = bits.view(torch.int16)[:count].view(dest.shape)  # uniform in [-2^15, 2^15)
    return torch.add(half, signed, alpha=2.0**-16, out=dest)


def apply(x: torch.Tensor, params: PaintingParams, fill: float | None = None) -> torch.Tensor:
    """In-paint or out-paint each sample as drawn; `fill` None means uniform noise."""
    return apply_(x.clone(), params, fill)


def apply_(x: torch.Tensor, params: PaintingParams, fill: float | None = None) -> torch.Tensor:
    """`apply`, in place on `x`."""
    painted = params.mode.nonzero().flatten().tolist()
    generator = torch.Generator(device=x.device).manual_seed(params.noise_seed)

    def paint(dest: torch.Tensor) -> None:
        if fill is None:
            fill_noise_(dest, generator)
        else:
            dest.fill_(fill)

    mode = params.mode.tolist()
    boxes = zip(params.starts.tolist(), params.sides.tolist(), params.active.tolist(), strict=True)
    for b, (starts, sides, active) in zip(painted, boxes, strict=True):
        windows = [
            (slice(None), *(slice(s, s + n) for s, n in zip(start, side, strict=True)))
            for start, side, on in zip(starts, sides, active, strict=True)
            if on
        ]
        if mode[b] == INPAINT:
            for window in windows:
                paint(x[b][window])
            continue
        # Out-painting: the sample becomes noise, but for its windows, restored from a copy.
        kept = scratch("kept", x.shape[1:], x.dtype, x.device).copy_(x[b])
        paint(x[b])
        for window in windows:
            x[b][window] = kept[window]
    return x
