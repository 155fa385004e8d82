"""Local pixel shuffling: 10,000 random boxes per sample, sides uniform in [1, dim//10] per axis,
the voxels inside each box permuted (about 78% of a 64x64x32 cube's voxels end up displaced).

The original loops over the boxes in Python (~60 ms per shuffled cube here): each box reads its voxels
from the unshuffled cube, permutes them and writes them back, so where boxes overlap the later box
wins. The same result here (the tests compare it with that loop), with no loop over boxes: every box
proposes, for each voxel it covers, a source voxel under its drawing order, and one scatter-max keeps
the last box's proposal (voxels no box covers are their own source). Proposals are built one box
shape at a time (a broadcast add for all boxes of that shape) into a table laid out sample by sample,
so that the scatter sweeps memory in order and runs one sample per thread.

Permutations: the k-th box of a shape in a sample (in drawing order) permutes its voxels by the
(k % rows)-th of that shape's pool of uniform random permutations (random keys, argsort). With
`share=1` (the default) every box of a sample has its own, so each sample is shuffled exactly as
the original would; the samples of one batch reuse the pool (the k-th box of a shape permutes alike
in each). `share=s` lets s boxes of a shape in a sample take turns on one (fewer random keys).
"""

import math
from dataclasses import dataclass

import numpy as np
import torch

from medfound.methods.genesis.shuffle_sources import (
    box_shapes,
    offset_pools,
    proposal_bits,
    sources,
)

BOXES = 10_000
SHARE = 1
CHUNK = 16  # samples shuffled together: bounds the table (~3.5 MB per 64x64x32 sample)


@dataclass
class ShuffleParams:
    """For the samples whose `applied` (B,) flag is set, in batch order, their boxes grouped by
    shape: `counts` (n, shapes) boxes of each of `box_shapes(spatial)`; `starts` (n, boxes, dims),
    each sample's boxes of shape 0 first, then shape 1, ...; `order` (n, boxes) each box's place
    in the drawing sequence (a later box overwrites an earlier one); `perms[k]` (rows, volume):
    each row a permutation of the voxels of a box of shape k (slots in row-major order)."""

    applied: torch.Tensor
    counts: torch.Tensor
    starts: torch.Tensor
    order: torch.Tensor
    perms: list[torch.Tensor]


def sample(
    shape: tuple[int, ...],
    generator: torch.Generator,
    p: float = 0.5,
    boxes: int = BOXES,
    share: int = SHARE,
) -> ShuffleParams:
    """Draw which samples are shuffled, then their boxes and permutations (nothing for the rest)."""
    applied = torch.rand(shape[0], generator=generator) < p
    spatial, n = tuple(shape[2:]), int(applied.sum())
    shapes = box_shapes(spatial)
    kind = torch.randint(0, len(shapes), (n, boxes), generator=generator)  # in drawing order
    grouped, counts, order = _group(kind, len(shapes))
    # Starts are drawn in grouped order (given its shape, a box's start is independent of the
    # rest): uniform in [0, dim - side], axis by axis over contiguous rows.
    kind = kind.flatten().index_select(0, grouped)
    starts = torch.rand(len(spatial), n * boxes, generator=generator)
    for d, size in enumerate(spatial):
        starts[d].mul_((size + 1 - shapes[:, d]).float().index_select(0, kind))
    starts = starts.long().view(len(spatial), n, boxes).permute(1, 2, 0)
    perms = _permutations(spatial, counts, generator, share)
    return ShuffleParams(applied, counts, starts, order, perms)


def from_boxes(
    spatial: tuple[int, ...],
    applied: torch.Tensor,
    starts: torch.Tensor,
    sides: torch.Tensor,
    generator: torch.Generator,
    share: int = SHARE,
) -> ShuffleParams:
    """Params for given boxes, `starts` and `sides` (n, boxes, dims) in drawing order; only the
    permutations are drawn. Sides must lie in [1, max(1, dim//10)]."""
    highs = [max(1, d // 10) for d in spatial]
    kind = torch.zeros(sides.shape[:-1], dtype=torch.long)
    for d, high in enumerate(highs):  # the row of box_shapes(spatial)
        kind = kind * high + sides[..., d] - 1
    grouped, counts, order = _group(kind, len(box_shapes(spatial)))
    starts = starts.reshape(-1, len(spatial)).index_select(0, grouped).view(starts.shape)
    perms = _permutations(spatial, counts, generator, share)
    return ShuffleParams(applied, counts, starts, order, perms)


def _group(kind: torch.Tensor, shapes: int):
    """Order each sample's boxes by shape (stably: then by drawing order). Returns the grouped
    boxes' flat indices, counts (n, shapes) and order (n, boxes): 1 + index in drawing order."""
    n, boxes = kind.shape
    # One stable sort of (sample, shape) keys: narrow integer keys sort in a few linear passes.
    key = (kind + torch.arange(n)[:, None] * shapes).flatten()
    grouped = torch.argsort(key.to(_key_dtype(n * shapes)), stable=True)
    counts = torch.bincount(key, minlength=n * shapes).view(n, shapes)
    order = grouped.view(n, boxes) - torch.arange(n)[:, None] * boxes + 1
    return grouped, counts, order.to(torch.int32 if boxes < 2**31 else torch.int64)


def _permutations(spatial, counts: torch.Tensor, generator, share: int) -> list[torch.Tensor]:
    """Per box shape, ceil(m / share) uniform random permutations (rows) of its voxels, m the most
    boxes of that shape in one sample: the orders that sort rows of random keys."""
    shapes = box_shapes(spatial)
    most = counts.amax(0) if len(counts) else counts.new_zeros(len(shapes))
    perms = []
    for box, m in zip(shapes.tolist(), most.tolist(), strict=True):
        volume = math.prod(box)
        # Random high bits, the slot in the low bits: keys never tie, so any sort gives the same
        # order. NumPy's argsort of short rows is SIMD-vectorised: ~3x torch's here.
        slot_bits = max(1, (volume - 1).bit_length())
        shape = (-(-m // share), volume)
        keys = torch.randint(
            0, 2 ** (31 - slot_bits), shape, generator=generator, dtype=torch.int32
        )
        keys = (keys << slot_bits) | torch.arange(volume, dtype=torch.int32)
        perms.append(torch.from_numpy(np.argsort(keys.numpy(), axis=1)))
    return perms


def _key_dtype(high: int) -> torch.dtype:
    """The narrowest integer type holding [0, high): sorts of narrow keys take fewer passes."""
    for dtype in (torch.uint8, torch.int16, torch.int32):
        if high <= torch.iinfo(dtype).max + 1:
            return dtype
    return torch.int64


def apply(x: torch.Tensor, params: ShuffleParams) -> torch.Tensor:
    """Permute the voxels inside each box of the shuffled samples (all channels alike)."""
    return shuffle_into(torch.empty(x.shape, dtype=x.dtype, device=x.device), x, params)


def shuffle_into(dest: torch.Tensor, x: torch.Tensor, params: ShuffleParams) -> torch.Tensor:
    """`apply`, written into `dest` (contiguous, x's shape, not sharing x's memory)."""
    if not dest.is_contiguous():
        raise ValueError("shuffle_into writes into a contiguous tensor")
    spatial = tuple(x.shape[2:])
    bits, dtype = proposal_bits(math.prod(spatial), params.order.shape[1])
    pools = offset_pools(spatial, params.perms, dtype, x.device)
    chosen = params.applied.tolist()
    for sample in (b for b, shuffled in enumerate(chosen) if not shuffled):
        dest[sample] = x[sample]
    chosen = [b for b, shuffled in enumerate(chosen) if shuffled]
    for first in range(0, len(chosen), CHUNK):
        which = slice(first, first + CHUNK)
        boxes = (b[which].to(x.device) for b in (params.counts, params.starts, params.order))
        reads = sources(spatial, *boxes, pools, bits)  # (n, voxels) within each sample
        for sample, source in zip(chosen[which], reads, strict=True):
            for c in range(x.shape[1]):  # every channel of a voxel moves alike
                torch.index_select(
                    x[sample, c].reshape(-1), 0, source, out=dest[sample, c].view(-1)
                )
    return dest
