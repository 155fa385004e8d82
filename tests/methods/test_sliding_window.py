"""Sliding-window inference equals whole-image inference wherever both apply, at any image size."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medfound.errors import ConfigError
from medfound.methods.sliding_window import sliding_window_predict
from medfound.models import load_model
from medfound.models.segmenter import build_segmenter


def _rand(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def _pointwise(dims: int, channels: int = 2, classes: int = 3) -> nn.Module:
    """A 1x1 convolution: its output at a pixel depends on that pixel only, so any tiling of the
    image into windows must give the whole-image result."""
    torch.manual_seed(3)
    conv = nn.Conv2d if dims == 2 else nn.Conv3d
    return conv(channels, classes, kernel_size=1)


@pytest.mark.parametrize("mode", ["gaussian", "constant"])
@pytest.mark.parametrize(
    ("shape", "roi", "overlap"),
    [
        ((37, 29), (16, 16), 0.25),  # odd sizes, many windows
        ((40, 48), (16, 8), 0.5),
        ((11, 13), (16, 16), 0.25),  # smaller than the window: padded, cropped back
        ((9, 14, 11), (8, 8, 8), 0.25),
    ],
)
def test_any_tiling_of_a_pointwise_network_equals_the_whole_image(shape, roi, overlap, mode):
    net = _pointwise(len(shape))
    image = _rand(2, 2, *shape)
    out = sliding_window_predict(net, image, roi, overlap=overlap, sw_batch_size=3, mode=mode)
    with torch.no_grad():
        expected = torch.softmax(net(image), dim=1)
    assert out.shape == (2, 3, *shape)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def unet():
    torch.manual_seed(0)
    model = load_model("timm:resnet10t", random_init=True)
    return build_segmenter(model, 3, in_channels=1)


def test_a_window_the_size_of_the_image_is_the_whole_image_inference(unet):
    image = _rand(2, 1, 64, 32)
    out = sliding_window_predict(unet, image, (64, 32))
    unet.eval()
    with torch.no_grad():
        expected = torch.softmax(unet(image), dim=1)
    unet.train()
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_an_image_smaller_than_the_window_is_padded_with_zeros_around_it(unet):
    image = _rand(1, 1, 27, 30)
    out = sliding_window_predict(unet, image, (32, 32))
    # The window holds the image centred (the odd pixel of padding after it), zeros around it.
    padded = F.pad(image, (1, 1, 2, 3))
    unet.eval()
    with torch.no_grad():
        expected = torch.softmax(unet(padded), dim=1)[:, :, 2:29, 1:31]
    unet.train()
    assert out.shape == (1, 3, 27, 30)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_one_image_without_batch_axis_and_the_mode_restored(unet):
    image = _rand(1, 45, 37)  # odd sizes, larger than the window along one axis
    unet.train()
    out = sliding_window_predict(unet, image, (32, 32), overlap=0.5)
    assert unet.training
    assert out.shape == (3, 45, 37)
    torch.testing.assert_close(out.sum(dim=0), torch.ones(45, 37))
    assert bool((out >= 0).all())


def test_a_window_of_the_wrong_rank_is_refused():
    with pytest.raises(ConfigError, match="does not fit a 3D window"):
        sliding_window_predict(_pointwise(2), _rand(16, 16), (8, 8, 8))
