import pytest
import torch

from medfound.errors import ConfigError
from medfound.methods.simclr_views import SimCLRViews, ViewConfig, preset_views

OFF = {
    "flip_p": 0.0,
    "color_p": 0.0,
    "grayscale_p": 0.0,
    "blur_p": 0.0,
    "crop_scale": (1.0, 1.0),
    "crop_ratio": (1.0, 1.0),
    "image_size": 32,
}


def _images(n=4, side=32):
    torch.manual_seed(0)
    smooth = torch.nn.functional.interpolate(
        torch.rand(n, 3, 8, 8), size=(side, side), mode="bilinear"
    )
    return smooth.clamp(0, 1)


def test_views_shape_range_and_layout():
    views = SimCLRViews(preset_views("path", image_size=24))(_images(), seed=1)
    assert views.shape == (8, 3, 24, 24)
    assert views.min() >= 0.0 and views.max() <= 1.0
    assert not torch.allclose(views[:4], views[4:])  # two different views of each image


def test_seeded_views_are_reproducible():
    aug = SimCLRViews(preset_views("cxr", image_size=32))
    images = _images()
    torch.testing.assert_close(aug(images, seed=3), aug(images, seed=3))
    assert not torch.allclose(aug(images, seed=3), aug(images, seed=4))


@pytest.mark.parametrize(
    "forced",
    [
        {"flip_p": 1.0},
        {"color_p": 1.0},
        {"grayscale_p": 1.0},
        {"blur_p": 1.0},
        {"rotation_degrees": 30.0, "rotation_p": 1.0},
        {"equalize_p": 1.0},
        {"elastic_p": 1.0, "elastic_alpha": 4.0, "elastic_sigma": 4.0},
        {"crop_scale": (0.08, 0.3), "crop_ratio": (0.75, 1.33)},
    ],
)
def test_each_op_changes_the_image_when_forced_on(forced):
    images = _images()
    identity = SimCLRViews(ViewConfig(**OFF))(images, seed=0)
    torch.testing.assert_close(identity[:4], images, atol=1e-4, rtol=0)  # everything off: unchanged
    changed = SimCLRViews(ViewConfig(**{**OFF, **forced}))(images, seed=0)
    assert (changed[:4] - images).abs().mean() > 1e-3


def test_unknown_preset_or_field():
    with pytest.raises(ConfigError, match="unknown augmentation preset 'ct'"):
        preset_views("ct")
    with pytest.raises(ConfigError, match="blur_sigmaa"):
        preset_views("path", blur_sigmaa=(1, 2))
