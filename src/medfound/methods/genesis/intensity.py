"""Non-linear intensity: each sample's values pass through a Bezier curve from (0, 0) to (1, 1) with
two random control points; with p 0.5 the mapping is decreasing (an intensity inversion).

The original evaluates the curve at 100,000 points and calls np.interp per cube; here the curve is
evaluated at 1,001 points per sample and looked up for the whole batch with one searchsorted.
"""

from dataclasses import dataclass

import torch

_POINTS = 1001


@dataclass
class IntensityParams:
    """xs, ys: (B, points) the sampled curves, xs increasing; applied: (B,) whether to map at all."""

    xs: torch.Tensor
    ys: torch.Tensor
    applied: torch.Tensor


def sample(
    shape: tuple[int, ...], generator: torch.Generator, p: float = 0.9, invert_p: float = 0.5
):
    """Curves for a batch: control points uniform in the unit square, inversion with `invert_p`."""
    batch = shape[0]
    control = torch.rand(batch, 2, 2, generator=generator)  # (sample, point, (x, y))
    t = torch.linspace(0.0, 1.0, _POINTS)
    # Cubic Bezier with end points (0, 0) and (1, 1): B(t) = 3(1-t)^2 t P1 + 3(1-t) t^2 P2 + t^3.
    w1, w2, w3 = 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3
    curve = w1[None, :, None] * control[:, None, 0] + w2[None, :, None] * control[:, None, 1]
    curve = curve + w3[None, :, None]
    xs = curve[..., 0].sort(dim=1).values
    ys = curve[..., 1].sort(dim=1).values
    invert = torch.rand(batch, generator=generator) < invert_p
    ys = torch.where(invert[:, None], ys.flip(1), ys)
    applied = torch.rand(batch, generator=generator) < p
    return IntensityParams(xs=xs, ys=ys, applied=applied)


def apply(x: torch.Tensor, params: IntensityParams) -> torch.Tensor:
    """Map every value of each sample through its curve (linear between the curve's points)."""
    batch = x.shape[0]
    xs, ys = params.xs.to(x.device, x.dtype), params.ys.to(x.device, x.dtype)
    flat = x.reshape(batch, -1).clamp(0, 1).contiguous()
    right = torch.searchsorted(xs, flat).clamp(1, xs.shape[1] - 1)
    left = right - 1
    x0, x1 = xs.gather(1, left), xs.gather(1, right)
    y0, y1 = ys.gather(1, left), ys.gather(1, right)
    share = ((flat - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    mapped = (y0 + share * (y1 - y0)).view_as(x)
    applied = params.applied.to(x.device).view(-1, *([1] * (x.ndim - 1)))
    return torch.where(applied, mapped, x)
