"""Local pixel shuffling: 10,000 random boxes per sample, sides uniform in [1, dim//10] per axis, the
voxels inside each box permuted (about 78% of a 64x64x32 cube's voxels end up displaced).

The original loops over the boxes in Python (~50 ms per cube). Here every box of a batch is one row of
a padded (boxes, max box volume) index table: a random sort key per slot permutes the valid slots, and
where boxes overlap the later box wins, as in the original (each box reads the original cube).
"""

import math
from dataclasses import dataclass

import torch

BOXES = 10_000


@dataclass
class ShuffleParams:
    """starts, sides: (B, boxes, dims); keys: (B, boxes, max box volume) sort keys; applied: (B,)."""

    starts: torch.Tensor
    sides: torch.Tensor
    keys: torch.Tensor
    applied: torch.Tensor


def sample(shape: tuple[int, ...], generator: torch.Generator, p: float = 0.5, boxes: int = BOXES):
    """Draw each sample's boxes and the permutation keys of their voxels."""
    batch, dims = shape[0], tuple(shape[2:])
    highs = [max(1, d // 10) for d in dims]
    sides = torch.stack(
        [torch.randint(1, h + 1, (batch, boxes), generator=generator) for h in highs], -1
    )
    room = torch.tensor(dims) - sides + 1
    starts = (torch.rand(batch, boxes, len(dims), generator=generator) * room).long()
    keys = torch.rand(batch, boxes, math.prod(highs), generator=generator)
    applied = torch.rand(batch, generator=generator) < p
    return ShuffleParams(starts=starts, sides=sides, keys=keys, applied=applied)


def apply(x: torch.Tensor, params: ShuffleParams) -> torch.Tensor:
    """Permute the voxels inside each box (all channels alike)."""
    batch, channels, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    device = x.device
    starts, sides = params.starts.to(device), params.sides.to(device)
    highs = [max(1, d // 10) for d in spatial]
    # Local offsets of every slot of the largest box, and the voxel each slot is in each box.
    grids = torch.meshgrid(*[torch.arange(h, device=device) for h in highs], indexing="ij")
    offsets = torch.stack([g.reshape(-1) for g in grids], -1)  # (slots, dims)
    valid = torch.ones(sides.shape[:2] + offsets.shape[:1], dtype=torch.bool, device=device)
    for d in range(len(spatial)):  # (B, boxes, slots): the slot lies inside this box
        valid &= offsets[:, d] < sides[..., d, None]
    strides = torch.tensor(
        [math.prod(spatial[d + 1 :]) for d in range(len(spatial))], device=device
    )
    corner = (starts * strides).sum(-1, keepdim=True)  # (B, boxes, 1)
    dest = torch.where(valid, corner + (offsets * strides).sum(-1), 0)  # (B, boxes, slots)
    # The k-th valid slot (in slot order) takes the voxel of the k-th valid slot in a random order.
    keys = torch.where(valid, params.keys.to(device), 2.0)
    shuffled = torch.argsort(keys, dim=-1)
    rank = (valid.cumsum(-1) - 1).clamp_min(0)
    src = dest.gather(-1, shuffled.gather(-1, rank))
    used = valid
    # Overlaps: the last box covering a voxel decides it, as the original's sequential writes do.
    box = torch.arange(dest.shape[1], device=device)[None, :, None].expand_as(dest)
    winner = torch.full((batch, math.prod(spatial)), -1, dtype=torch.long, device=device)
    winner.scatter_reduce_(1, dest.flatten(1), torch.where(used, box, -1).flatten(1), "amax")
    keep = used & (winner.gather(1, dest.flatten(1)).view_as(dest) == box)
    flat = x.reshape(batch, channels, -1)
    out = flat.clone()
    rows = torch.arange(batch, device=device)[:, None, None].expand_as(dest)[keep]
    to, frm = dest[keep], src[keep]
    out[rows, :, to] = flat[rows, :, frm]
    applied = params.applied.to(device).view(-1, 1, 1)
    return torch.where(applied, out, flat).view_as(x)
