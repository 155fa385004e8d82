"""The engine of local pixel shuffling (methods/genesis/shuffle.py): which voxel each voxel of a
shuffled sample reads, for boxes grouped by shape, with no loop over boxes.

Every box proposes, for each voxel it covers, (its drawing order << bits) + the voxel it reads; the
largest proposal at a voxel is the last covering box's, which is what the original's sequential
writes leave there. Proposals are laid out in a (samples, columns) table, a block of columns per
box shape filled by one broadcast add, and reduced by one scatter-max per sample row.
"""

import functools
import math

import torch

from medfound.methods.genesis.scratch import scratch


def box_shapes(spatial: tuple[int, ...]) -> torch.Tensor:
    """(shapes, dims) every box shape the sampler can draw, sides in [1, max(1, dim//10)]."""
    highs = [max(1, d // 10) for d in spatial]
    grids = torch.meshgrid(*[torch.arange(1, h + 1) for h in highs], indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], -1)


def proposal_bits(volume: int, boxes: int) -> tuple[int, torch.dtype]:
    """A proposal is (order << bits) + source voxel: the largest proposal at a voxel is the source
    the last box covering it assigns. 32-bit when it fits: the scatter-max then runs 2x faster."""
    bits = (volume - 1).bit_length()
    return bits, torch.int32 if ((boxes + 1) << bits) < 2**31 else torch.int64


@functools.lru_cache(maxsize=16)
def _slot_offsets(spatial: tuple[int, ...]) -> list[torch.Tensor]:
    """Per box shape, the flat offsets from the box's corner of its voxels (row-major)."""
    strides = [math.prod(spatial[d + 1 :]) for d in range(len(spatial))]
    offsets = []
    for shape in box_shapes(spatial).tolist():
        grids = torch.meshgrid(*[torch.arange(s) for s in shape], indexing="ij")
        offsets.append(sum(g.reshape(-1) * st for g, st in zip(grids, strides, strict=True)))
    return offsets


def offset_pools(spatial, perms: list[torch.Tensor], dtype, device):
    """Per box shape: its voxels' offsets (volume, 1), and (volume, permutations) the offset each
    slot reads under each permutation (a column each), in `dtype`."""
    result = []
    for offsets, rows in zip(_slot_offsets(spatial), perms, strict=True):
        offsets = offsets.to(device)
        result.append((offsets[:, None], offsets.to(dtype).take(rows.to(device).t())))
    return result


def sources(spatial, counts, starts, order, pools, bits: int) -> torch.Tensor:
    """(n, voxels): the voxel each voxel of each sample takes its value from, within the sample."""
    n, volume = len(order), math.prod(spatial)
    targets, proposals = _proposals(spatial, counts, starts, order, pools, bits)
    # Every voxel starts as its own source, under order 0; rows no box fills write past the end.
    width = volume + _reach(tuple(spatial))
    best = scratch("best", (n, width), proposals.dtype, order.device)
    best.copy_(_arange(width, proposals.dtype, order.device))
    best.scatter_reduce_(1, targets, proposals, "amax")  # one sample per row: runs in parallel
    source = scratch("source", (n, volume), proposals.dtype, order.device)
    return torch.bitwise_and(best[:, :volume], (1 << bits) - 1, out=source)


def _proposals(spatial, counts, starts, order, pools, bits: int):
    """(targets, proposals) (n, table columns): for every voxel of every box, the voxel it writes
    and (order << bits) + the voxel it reads; one block of columns per box shape."""
    (n, boxes), device = order.shape, order.device
    dtype = pools[0][1].dtype
    # Each box's bases: where it writes (its corner) and what it proposes (its order and corner).
    corner = scratch("corner", (n, boxes), torch.long, device).zero_()
    for d in range(len(spatial)):
        corner.add_(starts[..., d], alpha=math.prod(spatial[d + 1 :]))
    proposed = scratch("proposed", (n, boxes), dtype, device).copy_(corner)
    proposed.add_(order.to(dtype), alpha=1 << bits)
    capacity, row_bases = _box_rows(counts, (corner, proposed), math.prod(spatial))
    widths = [m * len(offsets) for m, (offsets, _) in zip(capacity, pools, strict=True)]
    targets = scratch("targets", (n, sum(widths)), torch.long, device)
    proposals = scratch("proposals", (n, sum(widths)), dtype, device)
    blocks = zip(
        capacity,
        pools,
        row_bases[0].split(capacity, dim=2),
        row_bases[1].split(capacity, dim=2),
        targets.split(widths, dim=1),
        proposals.split(widths, dim=1),
        strict=True,
    )
    # Each shape's block is (n, its volume, its boxes): the long inner loop runs over boxes.
    for m, (offsets, permuted), target_base, proposal_base, target, proposal in blocks:
        if m:
            torch.add(target_base, offsets, out=target.view(n, -1, m))
            torch.add(proposal_base, _turns(permuted, m), out=proposal.view(n, -1, m))
    return targets, proposals


def _turns(permuted: torch.Tensor, boxes: int) -> torch.Tensor:
    """(volume, boxes): the permutation column k % columns that the k-th box of a shape uses."""
    columns = permuted.shape[1]
    if columns == 0:
        raise ValueError("ShuffleParams.perms lacks permutations for a box shape it uses")
    if columns >= boxes:
        return permuted[:, :boxes]
    return permuted[:, torch.arange(boxes, device=permuted.device) % columns]


@functools.lru_cache(maxsize=16)
def _reach(spatial: tuple[int, ...]) -> int:
    """1 + the largest offset of a voxel from its box's corner (the scratch past a sample); from
    the CPU offsets, so that a GPU batch waits for no device-to-host copy."""
    return 1 + max(int(offsets.max()) for offsets in _slot_offsets(spatial))


def _box_rows(counts: torch.Tensor, bases, scratch_base: int):
    """Lay each sample's boxes out as rows of a table: per shape, `capacity[shape]` rows (the most
    boxes of that shape in one sample), the k-th box of a shape on its k-th row.

    Returns capacity (list) and each of `bases` (n, boxes) moved to (n, 1, rows); the rows no box
    fills get the target base `scratch_base` (past the sample's voxels) and source base 0.
    """
    n, boxes = bases[0].shape
    device = counts.device
    capacity = counts.amax(0)
    rows = int(capacity.sum())
    # A box's row is its index among its sample's boxes plus its shape's shift (where the shape's
    # rows begin, less where its boxes begin): the shifts, accumulated from each group's start.
    first = counts.cumsum(1) - counts
    shift = (capacity.cumsum(0) - capacity)[None, :] - first
    steps = torch.diff(shift, dim=1, prepend=torch.zeros_like(shift[:, :1]))
    jumps = scratch("jumps", (n, boxes + 1), torch.long, device).zero_()
    jumps.scatter_add_(1, first, steps)
    row = torch.cumsum(jumps[:, :boxes], dim=1, out=scratch("row", (n, boxes), torch.long, device))
    row.add_(_arange(boxes, torch.long, device))
    moved = []
    for name, base, empty in zip(
        ("target rows", "source rows"), bases, (scratch_base, 0), strict=True
    ):
        table = scratch(name, (n, rows), base.dtype, device).fill_(empty)
        moved.append(table.scatter_(1, row, base).view(n, 1, rows))
    return capacity.tolist(), moved


@functools.lru_cache(maxsize=16)
def _arange(size: int, dtype: torch.dtype, device) -> torch.Tensor:
    """0, 1, ..., size - 1, kept (an index every call uses: allocating it costs more than filling)."""
    return torch.arange(size, dtype=dtype, device=device)
