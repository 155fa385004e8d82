import math

import kornia.enhance as E
import pytest
import torch

from medfound.methods.color_jitter import (
    JitterParams,
    RandomColorJitter,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
)


def _images(n=6, side=16):
    torch.manual_seed(0)
    x = torch.rand(n, 3, side, side)
    x[0, :, :4] = 0.5  # gray pixels: hue undefined, saturation 0
    x[1, :, 4:8] = torch.tensor([1.0, 0.2, 0.2]).view(3, 1, 1)  # a saturated red block
    return x


def test_hue_and_saturation_follow_the_hsv_definitions():
    x = _images()
    shift = torch.linspace(-0.2, 0.2, 6)
    # kornia goes through a full HSV round trip with the hue in radians
    torch.testing.assert_close(adjust_hue(x, shift), E.adjust_hue(x, shift * 2 * math.pi))
    factor = torch.linspace(0.2, 1.8, 6)
    torch.testing.assert_close(adjust_saturation(x, factor), E.adjust_saturation(x, factor))
    torch.testing.assert_close(adjust_hue(x, torch.zeros(6)), x, atol=2e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(x, torch.ones(6)), x, atol=2e-6, rtol=0)  # a full turn


def test_brightness_and_contrast_as_the_original_defines_them():
    x = _images()
    factor = torch.linspace(0.5, 1.5, 6)
    torch.testing.assert_close(adjust_brightness(x, factor), x * factor.view(-1, 1, 1, 1))
    mean = x.mean(dim=(2, 3), keepdim=True)  # per channel, as TensorFlow's adjust_contrast
    expected = (x - mean) * factor.view(-1, 1, 1, 1) + mean
    torch.testing.assert_close(adjust_contrast(x, factor), expected)


def test_apply_runs_each_images_operations_in_its_own_order_and_clips_each_time():
    x = _images(2)
    factors = torch.tensor([[1.6, 1.7, 0.4, 0.1], [1.6, 1.7, 0.4, 0.1]])
    order = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    out = RandomColorJitter().apply(x, JitterParams(torch.tensor([0, 1]), factors, order))
    ops = [adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue]
    for i in range(2):
        expected = x[i : i + 1]
        for op in order[i].tolist():
            expected = ops[op](expected, factors[i : i + 1, op]).clamp(0, 1)
        torch.testing.assert_close(out[i : i + 1], expected)
    swapped = RandomColorJitter().apply(
        x, JitterParams(torch.tensor([0, 1]), factors, order.flip(0))
    )
    assert not torch.allclose(out, swapped)  # the order matters, so drawing it per image matters


def test_sampled_parameters_are_per_image_and_in_range():
    torch.manual_seed(0)
    params = RandomColorJitter(strength=0.5, p=0.8).sample(2000, torch.device("cpu"))
    assert 0.75 < params.chosen.numel() / 2000 < 0.85
    assert params.factors[:, :3].min() >= 0.6 and params.factors[:, :3].max() <= 1.4
    assert params.factors[:, 3].abs().max() <= 0.1
    assert (params.order.sort(dim=1).values == torch.arange(4)).all()  # permutations
    assert len({tuple(o) for o in params.order.tolist()}) == 24  # every order occurs


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_probability_zero_is_the_identity_and_one_changes_every_image(p):
    x = _images()
    out = RandomColorJitter(p=p)(x)
    changed = (out - x).abs().flatten(1).amax(dim=1) > 1e-4
    assert changed.all() if p else not changed.any()
