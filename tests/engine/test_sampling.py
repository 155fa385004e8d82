import pytest

from medfound.engine.sampling import EpochBatchSampler


def _global_batches(sampler_args, consumed_from=0, count=None):
    """The global batches (ranks' slices joined) from position `consumed_from`, `count` of them."""
    samplers = [EpochBatchSampler(*sampler_args[:2], rank, 2, sampler_args[2]) for rank in range(2)]
    out = []
    consumed = consumed_from
    while count is None or len(out) < count:
        for s in samplers:
            s.set_position(consumed)
        epoch_batches = list(zip(*[list(s) for s in samplers], strict=True))
        out.extend([i for part in parts for i in part] for parts in epoch_batches)
        consumed += len(epoch_batches)
        if count is None:
            break
    return out[:count] if count else out


def test_ranks_split_each_global_batch_and_an_epoch_covers_full_batches_once():
    batches = _global_batches((22, 8, 0))
    assert len(batches) == 2 and all(len(b) == 8 for b in batches)  # 22 // 8, the rest dropped
    flat = [i for b in batches for i in b]
    assert len(set(flat)) == 16 and set(flat) <= set(range(22))


def test_resuming_at_any_position_continues_the_same_sequence():
    whole = _global_batches((20, 4, 7), 0, 12)  # 5 batches per epoch: crosses two epoch ends
    for position in (1, 4, 5, 9):
        assert _global_batches((20, 4, 7), position, 12 - position) == whole[position:]


def test_epochs_and_seeds_reshuffle():
    sampler = EpochBatchSampler(50, 10, seed=1)
    assert list(sampler.permutation(0)) != list(sampler.permutation(1))
    assert list(sampler.permutation(0)) != list(EpochBatchSampler(50, 10, seed=2).permutation(0))
    assert list(sampler.permutation(3)) == list(EpochBatchSampler(50, 10, seed=1).permutation(3))


def test_a_batch_that_does_not_split_over_the_ranks_is_refused():
    with pytest.raises(ValueError, match="not divisible"):
        EpochBatchSampler(100, 9, rank=0, world_size=2)
