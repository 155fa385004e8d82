"""Models Genesis corruptions against the documented behaviour (REFERENCE.md section 3)."""

import math

import numpy as np
import pytest
import torch

from medfound.errors import ConfigError
from medfound.methods.genesis import flip, intensity, painting, scratch, shuffle
from medfound.methods.genesis.corrupt import CorruptionConfig, GenesisCorruption

CUBE = (64, 64, 32)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _unique_cubes(batch, cube=CUBE):
    n = batch * math.prod(cube)
    return torch.randperm(n, generator=_gen(1)).float().view(batch, 1, *cube) / n


def test_local_shuffling_displaces_about_78_percent_of_voxels():
    x = _unique_cubes(3)
    y = shuffle.apply(x, shuffle.sample(x.shape, _gen(), p=1.0))
    displaced = (y != x).float().mean().item()
    assert 0.74 < displaced < 0.82, displaced


def _sequential_shuffle(x: torch.Tensor, params: shuffle.ShuffleParams) -> torch.Tensor:
    """The original's loop, box by box in drawing order, each box reading the unshuffled sample,
    with the permutations `params` drew (box k of a shape in a sample: row k % rows)."""
    spatial = tuple(x.shape[2:])
    shapes = shuffle.box_shapes(spatial).tolist()
    out = x.clone()
    for i, sample in enumerate(params.applied.nonzero().flatten().tolist()):
        counts = params.counts[i].tolist()
        kinds = [k for k, count in enumerate(counts) for _ in range(count)]
        rank = [r for count in counts for r in range(count)]  # among the boxes of its shape
        for j in sorted(range(len(kinds)), key=lambda j: int(params.order[i, j])):
            side, rows = shapes[kinds[j]], params.perms[kinds[j]]
            perm = rows[rank[j] % len(rows)]
            start = params.starts[i, j].tolist()
            box = tuple(slice(s, s + n) for s, n in zip(start, side, strict=True))
            window = x[sample][(slice(None), *box)]
            values = window.reshape(window.shape[0], -1)[:, perm]
            out[sample][(slice(None), *box)] = values.view(window.shape)
    return out


@pytest.mark.parametrize(
    ("shape", "share", "wide"),
    [
        ((3, 1, 21, 22, 13), 1, False),
        ((3, 2, 21, 22, 13), 3, False),
        ((3, 1, 21, 22, 13), 1, True),  # 64-bit proposals, as for cubes of 2^18 voxels and more
        ((2, 1, 34, 27), 1, False),
    ],
)
def test_shuffling_is_exactly_the_sequential_loop_over_boxes(shape, share, wide, monkeypatch):
    if wide:
        bits = shuffle.proposal_bits
        monkeypatch.setattr(shuffle, "proposal_bits", lambda *a: (bits(*a)[0], torch.int64))
    x = _unique_cubes(shape[0] * shape[1], shape[2:]).view(shape)
    params = shuffle.sample(shape, _gen(), p=0.7, boxes=2000, share=share)
    assert 0 < int(params.applied.sum()) < shape[0]  # shuffled and untouched samples both
    expected = _sequential_shuffle(x, params)
    torch.testing.assert_close(shuffle.apply(x, params), expected, rtol=0, atol=0)
    params.order = params.order.flip(1).contiguous()  # boxes overlap: another order, another result
    assert not torch.equal(shuffle.apply(x, params), expected)


def test_a_shuffled_box_holds_a_permutation_of_its_own_voxels_and_nothing_else_moves():
    x = _unique_cubes(2)
    starts = torch.tensor([[[10, 20, 7]], [[0, 58, 29]]])
    sides = torch.tensor([5, 6, 3]).expand(2, 1, 3)
    params = shuffle.from_boxes(CUBE, torch.ones(2, dtype=torch.bool), starts, sides, _gen())
    y = shuffle.apply(x, params)
    for b in range(2):
        (x0, y0, z0) = starts[b, 0].tolist()
        box = (b, 0, slice(x0, x0 + 5), slice(y0, y0 + 6), slice(z0, z0 + 3))
        assert torch.equal(y[box].flatten().sort().values, x[box].flatten().sort().values)
        assert not torch.equal(y[box], x[box])
        outside = torch.ones_like(x[b, 0], dtype=torch.bool)
        outside[box[2:]] = False
        assert torch.equal(y[b, 0][outside], x[b, 0][outside])


def test_shuffling_moves_every_channel_alike_and_works_in_2d():
    x2d = torch.rand(2, 1, 64, 64, generator=_gen())
    assert torch.equal(shuffle.apply(x2d, shuffle.sample(x2d.shape, _gen(), p=0.0)), x2d)
    y2d = shuffle.apply(x2d, shuffle.sample(x2d.shape, _gen(), p=1.0))
    assert 0.6 < (y2d != x2d).float().mean() < 0.95
    two = torch.cat([x2d, x2d + 1], dim=1)
    y = shuffle.apply(two, shuffle.sample(two.shape, _gen(), p=1.0))
    torch.testing.assert_close(y[:, 1], y[:, 0] + 1, rtol=0, atol=0)


@pytest.mark.parametrize(("outpaint", "low", "high"), [(0.0, 0.04, 0.08), (1.0, 0.27, 0.38)])
def test_painting_covers_the_documented_median_share(outpaint, low, high):
    params = painting.sample((101, 1, *CUBE), _gen(), p=1.0, outpaint_p=outpaint)
    mask = painting.box_mask(CUBE, params.starts, params.sides, params.active)
    share = mask.float().mean((1, 2, 3)).median().item()
    assert low < share < high, share  # in-painted (~6%), or kept by out-painting (~32%)


def test_in_and_out_painting_replace_exactly_the_masked_voxels():
    x = torch.full((4, 1, *CUBE), 0.3)  # not on the noise's 2^-16 grid
    for outpaint, kept_inside in ((0.0, False), (1.0, True)):
        params = painting.sample(x.shape, _gen(), p=1.0, outpaint_p=outpaint)
        mask = painting.box_mask(CUBE, params.starts, params.sides, params.active)[:, None]
        noisy = painting.apply(x, params)
        constant = painting.apply(x, params, fill=0.0)
        untouched = mask if kept_inside else ~mask
        assert torch.equal(noisy[untouched], x[untouched])
        assert (noisy[~untouched] != 0.3).all() and (constant[~untouched] == 0).all()
        assert torch.equal(noisy, painting.apply(x, params))  # the noise is part of the params
    noise = noisy[~untouched]
    assert noise.min() >= 0 and noise.max() < 1 and abs(noise.mean().item() - 0.5) < 0.01


def test_box_counts_follow_the_originals_while_loops():
    params = painting.sample((20000, 1, 64, 64, 32), torch.Generator().manual_seed(3), p=1.0)
    counts = params.active.sum(1)
    outer = params.mode[params.mode != painting.NONE] == painting.OUTPAINT
    inner_counts, outer_counts = counts[~outer].float(), counts[outer].float()
    # In-painting: P(no box) = 0.05, P(5 boxes) = 0.95^5; out-painting: a first window always.
    assert (inner_counts == 0).float().mean() == pytest.approx(0.05, abs=0.015)
    assert (inner_counts == 5).float().mean() == pytest.approx(0.95**5, abs=0.02)
    assert outer_counts.min() == 1
    assert (outer_counts == 5).float().mean() == pytest.approx(0.95**4, abs=0.015)


def test_the_corruption_works_under_inference_mode_and_after_it():
    cubes = torch.rand(4, 1, 16, 16, 8)
    corruption = GenesisCorruption(CorruptionConfig(shuffle_p=1.0))
    with torch.inference_mode():
        inside = corruption(cubes, 1)
    with torch.no_grad():
        after = corruption(cubes, 1)
    assert torch.equal(inside[0], after[0]) and torch.equal(inside[1], after[1])
    scratch.release()


def test_the_callers_batch_is_left_untouched():
    cubes = torch.rand(4, 1, 16, 16, 8)
    kept = cubes.clone()
    GenesisCorruption(CorruptionConfig(flip_p=1.0, shuffle_p=1.0))(cubes, 5)
    assert torch.equal(cubes, kept)


def test_painting_with_p_0_leaves_the_batch_alone():
    x = torch.rand(3, 1, 16, 16, 8, generator=_gen())
    assert torch.equal(painting.apply(x, painting.sample(x.shape, _gen(), p=0.0)), x)


def test_non_linear_intensity_is_monotone_and_inverts_half_the_time():
    params = intensity.sample((2000, 1, 2, 2, 2), _gen(), p=1.0)
    inverted = params.invert
    assert 0.46 < inverted.float().mean().item() < 0.54
    ramp = torch.linspace(0, 1, 64).view(1, 1, 4, 4, 4).repeat(2000, 1, 1, 1, 1)
    mapped = intensity.apply(ramp, params).flatten(1)
    steps = mapped.diff(dim=1)
    assert (steps[~inverted] >= 0).all() and (steps[inverted] <= 0).all()
    ends = mapped[:, [0, -1]]
    torch.testing.assert_close(ends[~inverted], torch.tensor([0.0, 1.0]).expand_as(ends[~inverted]))
    torch.testing.assert_close(ends[inverted], torch.tensor([1.0, 0.0]).expand_as(ends[inverted]))


def test_intensity_matches_the_originals_dense_curve_and_interpolation():
    params = intensity.sample((40, 1, 8, 8, 8), _gen(), p=1.0)
    x = torch.rand(40, 1, 8, 8, 8, generator=_gen(2))
    mapped = intensity.apply(x, params)
    t = np.linspace(0, 1, 100_000)
    errors = []
    for i in range(40):
        (x1, y1), (x2, y2) = params.control[i].double().tolist()
        curve_x = 3 * (1 - t) ** 2 * t * x1 + 3 * (1 - t) * t**2 * x2 + t**3
        curve_y = 3 * (1 - t) ** 2 * t * y1 + 3 * (1 - t) * t**2 * y2 + t**3
        xs, ys = np.sort(curve_x), np.sort(curve_y)
        ys = ys[::-1] if params.invert[i] else ys
        expected = np.interp(x[i].double().numpy(), xs, ys)
        errors.append(np.abs(mapped[i].double().numpy() - expected))
    errors = np.stack(errors)
    assert np.median(errors) < 1e-4 and np.percentile(errors, 99) < 2e-3, errors.max()


def test_intensity_with_p_0_is_the_identity_and_the_others_samples_are_kept():
    x = torch.rand(4, 1, 8, 8, 8, generator=_gen())
    params = intensity.sample(x.shape, _gen(), p=0.5)
    y = intensity.apply(x, params)
    kept = ~params.applied
    assert kept.any() and params.applied.any()
    assert torch.equal(y[kept], x[kept]) and not torch.equal(y[~kept], x[~kept])
    assert torch.equal(intensity.apply(x, intensity.sample(x.shape, _gen(), p=0.0)), x)


def test_flips_reach_every_axis_z_included_and_apply_to_input_and_target():
    params = flip.sample((3000, 1, *CUBE), _gen())
    rates = params.flips.float().mean(0)
    # Passes go on while U < 0.4 (at most 3): an axis ends up flipped for ~15% of samples,
    # a sample for ~37% (two flips of one axis cancel).
    assert ((rates > 0.12) & (rates < 0.19)).all(), rates
    assert 0.34 < params.flips.any(1).float().mean() < 0.40
    x = torch.rand(2, 1, *CUBE, generator=_gen())
    params = flip.FlipParams(flips=torch.tensor([[False, False, True], [True, True, False]]))
    y = flip.apply(x, params)
    assert torch.equal(y[0], x[0].flip(3)) and torch.equal(y[1], x[1].flip(1, 2))


def test_the_target_is_the_uncorrupted_cube_and_a_replay_needs_no_seed():
    corruption = GenesisCorruption()
    x = torch.rand(4, 1, *CUBE, generator=_gen())
    params = corruption.sample(tuple(x.shape), seed=7)
    inputs, targets = corruption.apply(x, params)
    torch.testing.assert_close(targets, flip.apply(x, params.flip), rtol=0, atol=0)
    corruption(torch.rand(9, 1, *CUBE), seed=1)  # another batch in between: scratch memory reused
    again_inputs, again_targets = corruption(x, seed=7)
    assert torch.equal(inputs, again_inputs) and torch.equal(targets, again_targets)
    scratch.release()
    assert torch.equal(inputs, corruption(x, seed=7)[0])
    assert not torch.equal(inputs, corruption(x, seed=8)[0])
    identity = GenesisCorruption(CorruptionConfig(shuffle_p=0, intensity_p=0, paint_p=0))
    inputs, targets = identity(x, seed=3)
    assert torch.equal(inputs, targets)  # the identity case: input = target


def test_the_composition_is_the_steps_one_after_the_other_in_2d_too():
    corruption = GenesisCorruption()
    x = torch.rand(6, 1, 64, 64, generator=_gen())
    params = corruption.sample(tuple(x.shape), seed=5)
    inputs, targets = corruption.apply(x, params)
    expected = shuffle.apply(flip.apply(x, params.flip), params.shuffle)
    expected = painting.apply(intensity.apply(expected, params.intensity), params.painting)
    assert torch.equal(inputs, expected) and torch.equal(targets, flip.apply(x, params.flip))


def test_a_channels_last_batch_gives_the_same_corruption():
    corruption = GenesisCorruption()
    x = torch.rand(3, 2, 24, 24, 16, generator=_gen())
    strided = x.to(memory_format=torch.channels_last_3d)
    for a, b in zip(corruption(x, seed=4), corruption(strided, seed=4), strict=True):
        assert torch.equal(a, b)


def test_probabilities_and_the_share_are_checked_by_name():
    with pytest.raises(ConfigError, match="paint_p must be in"):
        CorruptionConfig(paint_p=1.5)
    with pytest.raises(ConfigError, match="shuffle_share must be an integer >= 1"):
        CorruptionConfig(shuffle_share=0)
    for fill in (1.5, -0.1, float("nan"), True, "0"):
        with pytest.raises(ConfigError, match=r"fill must be a number in \[0, 1\]"):
            CorruptionConfig(fill=fill)
    assert CorruptionConfig(fill=0).fill == 0
