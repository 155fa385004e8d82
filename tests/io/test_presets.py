import numpy as np
import pytest

from medfound.errors import ConfigError, ImageReadError
from medfound.io import MedicalImage, get_preset, preprocess
from medfound.io.presets import PRESETS, Resize, resolve_auto, to_unit_range


def _image(array, **kw):
    return MedicalImage(array=np.asarray(array, np.float32), source_id="x", **kw)


def _run(image, preset, channels=3, dims=2, native=8):
    return preprocess(image, preset, spatial_dims=dims, channels=channels, native_size=native)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_gives_unit_range_and_model_shape(name):
    rng = np.random.default_rng(1)
    image = _image(rng.uniform(-2000, 3000, (1, 20, 30)), value_range=(0.0, 4095.0))
    out = _run(image, get_preset(name, size=16))
    assert out.shape == (3, 16, 16)
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out.std()) > 0


def test_ct_window_maps_hu():
    image = _image([[[-2000, -1000, 0, 1000, 3000]]], modality="CT")
    unit = to_unit_range(image, PRESETS["ct"])
    np.testing.assert_allclose(unit[0, 0], [0, 0, 0.5, 1, 1])


def test_mri_percentiles_are_per_scan():
    image = _image(np.arange(1000).reshape(1, 10, 100))
    unit = to_unit_range(image, get_preset("mri", percentiles=(0.0, 100.0)))
    assert unit.min() == 0.0 and unit.max() == 1.0
    scaled = to_unit_range(_image(np.arange(1000).reshape(1, 10, 100) * 7 + 3), PRESETS["mri"])
    np.testing.assert_allclose(scaled, to_unit_range(image, PRESETS["mri"]), atol=1e-6)


def test_cxr_makes_gray_three_channels_and_path_keeps_colour():
    rgb = _image(
        np.stack([np.full((4, 4), 255.0), np.zeros((4, 4)), np.zeros((4, 4))]), value_range=(0, 255)
    )
    gray = _run(rgb, get_preset("cxr", size=4))
    assert gray.shape == (3, 4, 4) and np.allclose(gray[0], gray[1]) and np.allclose(gray[0], 0.299)
    colour = _run(rgb, get_preset("path", size=4))
    assert colour[:, 0, 0].tolist() == [1.0, 0.0, 0.0]


def test_one_channel_model_gets_luminance():
    rgb = _image(np.full((3, 4, 4), 255.0), value_range=(0, 255))
    assert _run(rgb, get_preset("path", size=4), channels=1).shape == (1, 4, 4)


def test_crop_fit_keeps_aspect():
    left_half_bright = np.zeros((1, 10, 40))
    left_half_bright[..., :20] = 1
    out = _run(_image(left_half_bright, value_range=(0, 1)), get_preset("cxr", size=10, fit="crop"))
    assert out.shape == (3, 10, 10)
    assert float(out[0, :, :4].mean()) == pytest.approx(1.0) and float(out[0, :, -4:].mean()) == 0.0


def test_the_models_recipe_applies_unless_the_preset_says_otherwise():
    # a 12 x 20 image whose left and right quarters differ: a centre crop keeps neither
    array = np.full((1, 12, 20), 0.5)
    array[..., :5], array[..., 15:] = 0.0, 1.0
    image = _image(array, value_range=(0, 1))
    recipe = Resize("crop", crop_pct=0.5, interpolation="bicubic")
    shape = {"spatial_dims": 2, "channels": 1, "native_size": 6, "native_resize": recipe}
    # short side to floor(6 / 0.5) = 12: the image as it is; its centre 6 x 6 is all 0.5
    out = preprocess(image, get_preset("cxr"), **shape)
    assert out.shape == (1, 6, 6) and np.allclose(out, 0.5)
    # the preset's own fit wins: the whole width squeezed in, quarters included
    stretched = preprocess(image, get_preset("cxr", fit="stretch"), **shape)
    assert stretched[0, :, 0].max() < 0.2 and stretched[0, :, -1].min() > 0.8


@pytest.mark.parametrize(("offset", "first_row"), [("round", 2), ("floor", 1)])
def test_crop_offset_of_an_odd_margin(offset, first_row):
    # 9 rows x 6 columns, each row holding its number / 10; a 6 x 6 centre crop leaves 3 rows:
    # torchvision's corner is round(1.5) = 2, Hugging Face's floor(1.5) = 1
    rows = np.repeat(np.arange(9, dtype=np.float32)[:, None], 6, axis=1)[None] / 10
    recipe = Resize("crop", crop_offset=offset)
    out = preprocess(
        _image(rows, value_range=(0, 1)), get_preset("cxr"),
        spatial_dims=2, channels=1, native_size=6, native_resize=recipe,
    )  # fmt: skip
    assert out.shape == (1, 6, 6)
    assert float(out[0, 0, 0]) == pytest.approx(first_row / 10)


def test_auto_picks_by_modality():
    auto = get_preset("auto")
    assert resolve_auto(auto, _image(np.zeros((1, 2, 2)), modality="CT")).name == "auto:ct"
    assert resolve_auto(auto, _image(np.zeros((1, 2, 2)), modality="MR")).name == "auto:mri"
    assert resolve_auto(auto, _image(np.zeros((3, 2, 2)))).name == "auto:path"
    assert resolve_auto(auto, _image(np.zeros((1, 2, 2)))).name == "auto:cxr"


def test_3d_volume_resized_to_native_shape():
    out = _run(
        _image(np.zeros((1, 20, 20, 10))), PRESETS["ct"], channels=1, dims=3, native=(8, 8, 4)
    )
    assert out.shape == (1, 8, 8, 4)


def test_dimension_mismatch_is_an_image_error():
    with pytest.raises(ImageReadError, match=r"3D volume .* 2D image input"):
        _run(_image(np.zeros((1, 4, 4, 4))), PRESETS["cxr"])


def test_bad_preset_fields_are_named():
    with pytest.raises(ConfigError, match="unknown preset 'xray'"):
        get_preset("xray")
    with pytest.raises(ConfigError, match="unknown field 'sise'"):
        get_preset("cxr", sise=3)
    with pytest.raises(ConfigError, match="'intensity'"):
        get_preset("cxr", intensity="log")


def test_3d_shrinking_is_anti_aliased():
    board = np.where(np.indices((30, 30, 30)).sum(0) % 2, 1000.0, -1000.0)[None]
    out = _run(_image(board), PRESETS["ct"], channels=1, dims=3, native=(10, 10, 10))
    assert float((out - 0.5).abs().max()) < 0.03  # plain trilinear gives the 0/1 board back


def test_spacing_is_recorded_and_checked():
    assert '"spacing": [1.5, 1.5, 2.0]' in get_preset("ct", spacing=[1.5, 1.5, 2]).to_json()
    assert '"spacing": null' in get_preset("ct").to_json()
    with pytest.raises(ConfigError, match=r"'spacing': \[1, 0, 1\] is not three positive"):
        get_preset("ct", spacing=[1, 0, 1])
    auto = get_preset("auto", spacing=(2, 2, 2))
    assert resolve_auto(auto, _image(np.zeros((1, 2, 2, 2)), modality="CT")).spacing == (2, 2, 2)


@pytest.mark.parametrize(
    ("preset_spacing", "card_spacing", "image_spacing", "expected"),
    [
        ((2.0, 2.0, 2.0), (1.0, 1.0, 1.0), (0.5, 0.5, 3.0), (2.0, 2.0, 2.0)),  # preset wins
        (None, (1.0, 1.0, 1.0), (0.5, 0.5, 3.0), (1.0, 1.0, 1.0)),  # else the card's
        (None, None, (0.5, 0.5, 3.0), None),  # nobody asks
        ((2.0, 2.0, 2.0), None, None, None),  # the image does not know its spacing
        ((0.5, 0.5, 3.0), None, (0.5, 0.5, 3.0), None),  # already there
    ],
)
def test_volumes_are_resampled_to_the_asked_spacing(
    monkeypatch, caplog, preset_spacing, card_spacing, image_spacing, expected
):
    from medfound.io import presets

    calls = []

    def spy(tensor, spacing, target):
        calls.append((tuple(tensor.shape), tuple(spacing), tuple(target)))
        return presets.resize_volume(tensor, (6, 6, 6))

    monkeypatch.setattr(presets, "resample_to_spacing", spy)
    image = _image(np.zeros((1, 8, 8, 4)), spacing=image_spacing)
    out = preprocess(
        image,
        get_preset("ct", spacing=preset_spacing),
        spatial_dims=3,
        channels=1,
        native_size=(4, 4, 4),
        native_spacing=card_spacing,
    )
    assert out.shape == (1, 4, 4, 4)
    assert calls == ([((1, 8, 8, 4), image_spacing, expected)] if expected else [])
    assert ("spacing unknown" in caplog.text) == (preset_spacing is not None and not image_spacing)
