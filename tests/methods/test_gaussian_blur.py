import kornia.filters as KF
import pytest
import torch

from medfound.methods.gaussian_blur import BlurParams, RandomGaussianBlur, gaussian_blur


@pytest.mark.parametrize(("shape", "size"), [((5, 3, 24, 24), 5), ((3, 1, 20, 31), 7)])
def test_equals_a_per_image_gaussian_convolution_with_reflect_padding(shape, size):
    torch.manual_seed(0)
    images = torch.rand(shape)
    sigma = torch.linspace(0.1, 2.0, shape[0])
    expected = torch.cat(
        [
            KF.gaussian_blur2d(images[i : i + 1], (size, size), (s.item(), s.item()))
            for i, s in enumerate(sigma)
        ]
    )
    torch.testing.assert_close(gaussian_blur(images, sigma, size), expected)


def test_apply_blurs_exactly_the_chosen_images_and_keeps_the_mean():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16)
    params = BlurParams(chosen=torch.tensor([1, 3]), sigma=torch.tensor([1.5, 0.8]))
    out = RandomGaussianBlur(5).apply(images, params)
    torch.testing.assert_close(out[[0, 2]], images[[0, 2]])
    assert (out[[1, 3]] - images[[1, 3]]).abs().mean() > 1e-2
    assert out[[1, 3]].std() < images[[1, 3]].std()  # smoothing lowers the spread
    torch.testing.assert_close(out.mean(), images.mean(), atol=1e-2, rtol=0)


def test_bad_sizes_are_refused():
    with pytest.raises(ValueError, match="odd"):
        RandomGaussianBlur(4)
    with pytest.raises(ValueError, match="side above"):
        gaussian_blur(torch.rand(1, 3, 4, 4), torch.tensor([1.0]), 11)
