import dataclasses
import math

import pytest
import torch

from medfound.errors import ConfigError
from medfound.methods.simclr_views import SimCLRViews, ViewConfig, ViewParams, preset_views

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


@pytest.mark.parametrize("preset", ["path", "cxr"])
def test_recorded_parameters_replay_the_seeded_views_without_a_seed(preset):
    images = _images(side=40)
    config = preset_views(preset, image_size=32)
    views, params = SimCLRViews(config)(images, seed=7, return_params=True)
    torch.testing.assert_close(views, SimCLRViews(config)(images, seed=7), atol=0, rtol=0)
    torch.manual_seed(12345)  # another random state: a replay must not depend on it
    state = torch.random.get_rng_state()
    replay = SimCLRViews(config).apply(images, params)  # a fresh module: params carry everything
    torch.testing.assert_close(replay, views, atol=0, rtol=0)
    assert torch.equal(torch.random.get_rng_state(), state)  # and a replay draws nothing
    expected = ["crop", "flip", "color", "grayscale", "blur"]
    if preset == "cxr":
        expected = ["equalize", "elastic", *expected]  # REMEDIS never rotated in pretraining
    assert list(params.steps) == expected


def test_parameters_are_drawn_per_view_and_drive_the_replay():
    images = _images(n=3, side=40)
    config = preset_views("cxr", image_size=32, rotation_degrees=20.0)
    aug = SimCLRViews(config)
    views, params = aug(images, seed=0, return_params=True)
    n = 2 * images.shape[0]  # views: [view-1; view-2]
    steps = params.steps
    assert steps["elastic"]["noise"].shape == (n, 2, 40, 40)
    assert steps["rotation"]["degrees"].shape == (n,)
    assert steps["rotation"]["degrees"].abs().max() <= 20.0
    assert steps["crop"]["src"].shape == (n, 4, 2)  # each view's own crop corners
    for name in ("elastic", "rotation", "crop", "flip", "grayscale"):
        assert steps[name]["batch_prob"].shape == (n,)
    for name in ("equalize", "color", "blur"):
        assert steps[name].chosen.max() < n and steps[name].chosen.unique().numel() == len(
            steps[name].chosen
        )
    assert steps["color"].factors.shape == (len(steps["color"].chosen), 4)
    assert steps["blur"].sigma.shape == steps["blur"].chosen.shape
    # the replay follows the parameters: toggling view 0's flip changes view 0 and nothing else
    toggled = dict(steps["flip"], batch_prob=steps["flip"]["batch_prob"].clone())
    toggled["batch_prob"][0] = 1 - toggled["batch_prob"][0]
    edited = aug.apply(images, ViewParams(params.input_shape, {**steps, "flip": toggled}))
    assert not torch.allclose(edited[0], views[0])
    torch.testing.assert_close(edited[1:], views[1:], atol=0, rtol=0)


def test_parameters_for_other_images_are_refused():
    aug = SimCLRViews(preset_views("path", image_size=32))
    _, params = aug(_images(n=4), seed=0, return_params=True)
    with pytest.raises(ValueError, match=r"drawn for images \(4, 3, 32, 32\)"):
        aug.apply(_images(n=2), params)


INVALID = [
    ("image_size", 8),
    ("image_size", 32.5),
    ("crop_scale", (0.5, 0.1)),
    ("crop_scale", (0.0, 1.0)),
    ("crop_scale", (0.5, 1.5)),
    ("crop_ratio", (4 / 3, 3 / 4)),
    ("crop_ratio", (0.75,)),
    ("flip_p", 1.5),
    ("color_strength", -1.0),
    ("color_p", -0.1),
    ("grayscale_p", 2),
    ("blur_p", math.nan),
    ("blur_sigma", (2.0, 0.1)),
    ("blur_sigma", (-1.0, 2.0)),
    ("rotation_degrees", -5.0),
    ("rotation_p", "0.5"),
    ("equalize_p", 1.01),
    ("elastic_p", -1),
    ("elastic_alpha", -0.5),
    ("elastic_sigma", 0.0),
    ("crop_in_worker", "yes"),
]


def test_every_field_has_an_invalid_case():
    assert {name for name, _ in INVALID} == {f.name for f in dataclasses.fields(ViewConfig)}


@pytest.mark.parametrize(("field", "value"), INVALID)
def test_invalid_values_are_refused_naming_the_field(field, value):
    for make in (
        lambda: ViewConfig(**{field: value}),
        lambda: preset_views("cxr", **{field: value}),
    ):
        with pytest.raises(ConfigError) as caught:
            make()
        message = str(caught.value)
        assert message.startswith(f"{field} must") and message.endswith(f"got {value!r}")


def test_boundary_values_are_accepted_and_pairs_stored_as_tuples():
    config = ViewConfig(
        image_size=16, flip_p=0.0, blur_p=1.0, crop_scale=[1, 1], rotation_degrees=0.0
    )
    assert config.crop_scale == (1.0, 1.0) and config == dataclasses.replace(config)


def test_pairs_cropped_in_the_workers_are_laid_out_as_views_and_not_cropped_again():
    config = ViewConfig(
        image_size=16, flip_p=0.0, color_p=0.0, grayscale_p=0.0, blur_p=0.0, crop_in_worker=True
    )
    aug = SimCLRViews(config)
    assert "crop" not in aug.steps
    pairs = torch.rand(6, 3, 16, 16)  # image 0's two crops, image 1's, image 2's
    views = aug(pairs, seed=0)
    torch.testing.assert_close(views, torch.cat([pairs[0::2], pairs[1::2]]))  # [view-1; view-2]
    with pytest.raises(ValueError, match="come in twos"):
        aug(pairs[:5], seed=0)


def test_the_elastic_deformation_moves_pixels_as_far_as_the_readme_says():
    # the cxr preset's elastic step at p 1 on a coordinate ramp: output - input is the displacement
    config = preset_views("cxr", image_size=224, elastic_p=1.0)
    elastic = SimCLRViews(config).steps["elastic"]
    torch.manual_seed(0)
    y, x = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    ramp = torch.stack([x, y, x]).expand(16, 3, 224, 224) / 223.0
    moved = (elastic(ramp) - ramp)[:, :2, 32:-32, 32:-32] * 223.0  # away from the border
    distance = moved.pow(2).sum(1).sqrt()
    assert 1.0 < float(distance.mean()) < 1.7  # README: 1.3 px on average at 224
    assert 2.5 < float(distance.flatten().quantile(0.99)) < 3.8  # README: 3.1 px
