import numpy as np
import pytest
import torch
import torch.nn.functional as F

from medfound.io.resample import resample_to_spacing, resize_volume, spacing_shape


def _checkerboard(n: int) -> torch.Tensor:
    return torch.tensor(np.indices((n, n, n)).sum(0) % 2, dtype=torch.float32)[None]


def test_shrinking_a_checkerboard_gives_its_mean_not_a_new_pattern():
    volume = _checkerboard(30)
    plain = F.interpolate(volume[None], size=(10, 10, 10), mode="trilinear")[0]
    assert float(plain.std()) > 0.4  # every third voxel: the same full-contrast board, aliased
    smooth = resize_volume(volume, (10, 10, 10))
    assert smooth.shape == (1, 10, 10, 10)
    assert float((smooth - 0.5).abs().max()) < 0.03


def test_a_constant_volume_stays_constant_up_to_its_edges():
    out = resize_volume(torch.full((1, 40, 30, 20), 0.7), (10, 10, 10))
    torch.testing.assert_close(out, torch.full_like(out, 0.7))


def test_growing_an_axis_is_plain_trilinear():
    volume = torch.rand(1, 6, 7, 8)
    expected = F.interpolate(volume[None], size=(12, 14, 16), mode="trilinear")[0]
    torch.testing.assert_close(resize_volume(volume, (12, 14, 16)), expected)


def test_one_mm_resampled_to_two_mm_halves_that_axis():
    volume = torch.rand(1, 20, 16, 9)
    out = resample_to_spacing(volume, (1.0, 2.0, 1.0), (2.0, 2.0, 3.0))
    assert out.shape == (1, 10, 16, 3)


def test_a_linear_ramp_keeps_its_values_at_the_new_voxel_centres():
    x = torch.arange(20, dtype=torch.float32)  # value = position in mm at 1 mm spacing
    volume = x.view(1, 20, 1, 1).expand(1, 20, 4, 4).contiguous()
    out = resample_to_spacing(volume, (1.0, 1.0, 1.0), (2.0, 1.0, 1.0))
    # 2 mm voxel k covers 1 mm voxels 2k and 2k + 1: its centre is at 2k + 0.5 mm
    centres = torch.arange(10, dtype=torch.float32) * 2 + 0.5
    # away from the replicated edges a smoothed ramp is still the ramp
    torch.testing.assert_close(out[0, 2:-2, 0, 0], centres[2:-2], atol=1e-3, rtol=0)


@pytest.mark.parametrize(
    ("shape", "spacing", "target", "expected"),
    [
        ((100, 100, 40), (0.7, 0.7, 2.5), (1.4, 1.4, 1.25), (50, 50, 80)),
        ((3,), (1.0,), (9.0,), (1,)),
    ],
)
def test_spacing_shape(shape, spacing, target, expected):
    assert spacing_shape(shape, spacing, target) == expected
