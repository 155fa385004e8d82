"""Models Genesis corruptions against the documented behaviour (REFERENCE.md section 3)."""

import pytest
import torch

from medfound.errors import ConfigError
from medfound.methods.genesis import flip, intensity, painting, shuffle
from medfound.methods.genesis.corrupt import CorruptionConfig, GenesisCorruption

CUBE = (64, 64, 32)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _unique_cubes(batch):
    n = batch * CUBE[0] * CUBE[1] * CUBE[2]
    return torch.randperm(n, generator=_gen(1)).float().view(batch, 1, *CUBE) / n


def test_local_shuffling_displaces_about_78_percent_of_voxels():
    x = _unique_cubes(3)
    y = shuffle.apply(x, shuffle.sample(x.shape, _gen(), p=1.0))
    displaced = (y != x).float().mean().item()
    assert 0.74 < displaced < 0.82, displaced


def test_a_shuffled_box_holds_a_permutation_of_its_own_voxels_and_nothing_else_moves():
    x = _unique_cubes(2)
    params = shuffle.sample(x.shape, _gen(), p=1.0, boxes=1)
    params.sides[:] = torch.tensor([5, 6, 3])
    y = shuffle.apply(x, params)
    for b in range(2):
        (x0, y0, z0) = params.starts[b, 0].tolist()
        box = (b, 0, slice(x0, x0 + 5), slice(y0, y0 + 6), slice(z0, z0 + 3))
        assert torch.equal(y[box].flatten().sort().values, x[box].flatten().sort().values)
        assert not torch.equal(y[box], x[box])
        outside = torch.ones_like(x[b, 0], dtype=torch.bool)
        outside[box[2:]] = False
        assert torch.equal(y[b, 0][outside], x[b, 0][outside])


def test_shuffling_with_p_0_is_the_identity_and_works_in_2d():
    x2d = torch.rand(2, 1, 64, 64, generator=_gen())
    assert torch.equal(shuffle.apply(x2d, shuffle.sample(x2d.shape, _gen(), p=0.0)), x2d)
    y2d = shuffle.apply(x2d, shuffle.sample(x2d.shape, _gen(), p=1.0))
    assert 0.6 < (y2d != x2d).float().mean() < 0.95


@pytest.mark.parametrize(("outpaint", "low", "high"), [(0.0, 0.04, 0.08), (1.0, 0.27, 0.38)])
def test_painting_covers_the_documented_median_share(outpaint, low, high):
    params = painting.sample((101, 1, *CUBE), _gen(), p=1.0, outpaint_p=outpaint)
    mask = painting.box_mask(CUBE, params.starts, params.sides, params.active)
    share = mask.float().mean((1, 2, 3)).median().item()
    assert low < share < high, share  # in-painted (~6%), or kept by out-painting (~32%)


def test_in_and_out_painting_replace_exactly_the_masked_voxels():
    x = torch.full((4, 1, *CUBE), 0.5)
    for outpaint, kept_inside in ((0.0, False), (1.0, True)):
        params = painting.sample(x.shape, _gen(), p=1.0, outpaint_p=outpaint)
        mask = painting.box_mask(CUBE, params.starts, params.sides, params.active)[:, None]
        noisy = painting.apply(x, params)
        constant = painting.apply(x, params, fill=0.0)
        untouched = mask if kept_inside else ~mask
        assert torch.equal(noisy[untouched], x[untouched])
        assert (noisy[~untouched] != 0.5).all() and (constant[~untouched] == 0).all()
        assert torch.equal(noisy, painting.apply(x, params))  # the noise is part of the params


def test_non_linear_intensity_is_monotone_and_inverts_half_the_time():
    params = intensity.sample((2000, 1, 2, 2, 2), _gen(), p=1.0)
    inverted = params.ys[:, 0] > params.ys[:, -1]
    assert 0.46 < inverted.float().mean().item() < 0.54
    ramp = torch.linspace(0, 1, 64).view(1, 1, 4, 4, 4).repeat(2000, 1, 1, 1, 1)
    mapped = intensity.apply(ramp, params).flatten(1)
    steps = mapped.diff(dim=1)
    assert (steps[~inverted] >= -1e-6).all() and (steps[inverted] <= 1e-6).all()
    ends = mapped[:, [0, -1]]
    torch.testing.assert_close(ends[~inverted], torch.tensor([0.0, 1.0]).expand_as(ends[~inverted]))
    torch.testing.assert_close(ends[inverted], torch.tensor([1.0, 0.0]).expand_as(ends[inverted]))


def test_flips_reach_every_axis_z_included_and_apply_to_input_and_target():
    params = flip.sample((3000, 1, *CUBE), _gen())
    rates = params.flips.float().mean(0)
    assert ((rates > 0.25) & (rates < 0.36)).all(), rates  # 3 passes of p 0.4 over 3 axes
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
    again_inputs, _ = corruption(x, seed=7)
    assert torch.equal(inputs, again_inputs)
    assert not torch.equal(inputs, corruption(x, seed=8)[0])
    identity = GenesisCorruption(CorruptionConfig(shuffle_p=0, intensity_p=0, paint_p=0))
    inputs, targets = identity(x, seed=3)
    assert torch.equal(inputs, targets)  # the identity case: input = target


def test_probabilities_are_checked_by_name():
    with pytest.raises(ConfigError, match="paint_p must be in"):
        CorruptionConfig(paint_p=1.5)
