"""Which items each rank reads at each step: a seeded shuffle per epoch, resumable mid-epoch.

The global batch of step s in epoch e is items perm_e[s*B : (s+1)*B], where perm_e is a permutation
drawn from (seed, e); rank r of R takes the r-th of R equal slices. Knowing the number of batches
consumed is therefore enough to continue exactly where a run stopped, with any number of workers.
A dataset whose items depend on the epoch too (cube positions drawn anew each epoch: data/cubes.py)
gets `(epoch, index)` keys instead of indices.
"""

import numpy as np
from torch.utils.data import Sampler


class EpochBatchSampler(Sampler[list[int]]):
    """Batches of indices for one rank; `set_position(batches_consumed)` picks epoch and offset."""

    def __init__(
        self,
        size: int,
        global_batch: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        keyed_by_epoch: bool = False,
    ):
        if global_batch % world_size:
            raise ValueError(f"batch size {global_batch} is not divisible by {world_size} ranks")
        self.size, self.global_batch = size, global_batch
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.local_batch = global_batch // world_size
        self.batches_per_epoch = size // global_batch  # the last, partial batch is dropped
        self.epoch, self.offset = 0, 0
        self.keyed_by_epoch = keyed_by_epoch

    def set_position(self, batches_consumed: int) -> None:
        """Continue after `batches_consumed` global batches (counted over all epochs)."""
        self.epoch, self.offset = divmod(batches_consumed, self.batches_per_epoch)

    def permutation(self, epoch: int) -> np.ndarray:
        """The item order of `epoch` (the same on every rank)."""
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def __len__(self) -> int:
        return self.batches_per_epoch - self.offset

    def __iter__(self):
        order = self.permutation(self.epoch)
        for b in range(self.offset, self.batches_per_epoch):
            start = b * self.global_batch + self.rank * self.local_batch
            indices = order[start : start + self.local_batch].tolist()
            yield [(self.epoch, i) for i in indices] if self.keyed_by_epoch else indices
