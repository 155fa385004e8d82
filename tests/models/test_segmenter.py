"""Segmenters on medfound encoders: shapes, kept encoder weights, re-headed Genesis nets, channels."""

import copy

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from medfound.errors import ConfigError
from medfound.models import load_model
from medfound.models.segmenter import (
    MonaiUNetSegmenter,
    build_segmenter,
    decoder_parameters,
    encoder_parameters,
)


def _rand(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    ("name", "shape"),
    [
        ("timm:resnet10t", (2, 3, 50, 45)),  # odd sizes: the decoder interpolates to each skip
        ("resnetv2_50x1_bit.remedis_cxr_m", (1, 3, 64, 64)),
        ("simclr:r50x1", (1, 3, 64, 32)),
    ],
)
def test_2d_encoders_give_logits_at_the_input_size(name, shape):
    model = load_model(name, random_init=True)
    segmenter = build_segmenter(model, 4)
    logits = segmenter(_rand(*shape))
    assert logits.shape == (shape[0], 4, *shape[2:])
    # The divisor is the deepest stage's stride, as timm's feature_info reports it.
    assert segmenter.input_divisor == model.network.feature_info[-1]["reduction"]


def test_the_encoder_keeps_the_weights_of_the_loaded_file(tmp_path):
    torch.manual_seed(5)
    donor = load_model("timm:resnet10t", random_init=True, seed=7)
    state = {k: v + torch.randn_like(v) if v.is_floating_point() else v for k, v in
             donor.network.state_dict().items()}  # fmt: skip
    save_file(state, str(tmp_path / "w.safetensors"))
    model = load_model("timm:resnet10t", tmp_path / "w.safetensors")
    segmenter = build_segmenter(model, 2)
    kept = segmenter.encoder.network.state_dict()
    assert kept.keys() == state.keys()
    for key, value in state.items():
        torch.testing.assert_close(kept[key], value, rtol=0, atol=0)
    # The encoder's parameters are exactly the loaded network's; everything else is decoder.
    encoder = encoder_parameters(segmenter)
    assert [id(p) for p in encoder] == [id(p) for p in model.network.parameters()]
    decoder = decoder_parameters(segmenter)
    assert {id(p) for p in encoder}.isdisjoint(id(p) for p in decoder)
    assert len(encoder) + len(decoder) == len(list(segmenter.parameters()))
    assert {id(p) for p in segmenter.head.parameters()} <= {id(p) for p in decoder}


def test_the_genesis_3d_unet_is_kept_whole_with_a_new_head():
    model = load_model("unet3d_genesis.chest_ct", random_init=True)
    original = copy.deepcopy(model.network).eval()
    segmenter = build_segmenter(model, 3).eval()
    head = segmenter.encoder.network.head
    assert (head.in_channels, head.out_channels, head.kernel_size) == (64, 3, (1, 1, 1))
    assert segmenter.input_divisor == 8
    x = _rand(2, 1, 16, 16, 16)
    # The restoration net's last features (the input of its head), through the new 1x1x1 head.
    seen = []
    original.head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.no_grad():
        original(x)
        logits = segmenter(x)
    expected = F.conv3d(seen[0], head.weight, head.bias)
    assert logits.shape == (2, 3, 16, 16, 16)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    encoder = {id(p) for p in encoder_parameters(segmenter)}
    assert encoder == {id(p) for p in model.network.encoder.parameters()}
    assert {id(p) for p in model.network.decoder.parameters()}.isdisjoint(encoder)


def test_the_genesis_2d_unet_is_re_headed():
    model = load_model("unet2d_genesis.resnet18", random_init=True)
    segmenter = build_segmenter(model, 3)
    assert segmenter(_rand(2, 1, 64, 32)).shape == (2, 3, 64, 32)
    assert segmenter.encoder.network.head[0].out_channels == 3
    assert segmenter.input_divisor == 32
    encoder = {id(p) for p in encoder_parameters(segmenter)}
    assert encoder == {id(p) for p in model.network.unet.encoder.parameters()}


def test_k_copies_of_one_channel_into_an_expanded_1_channel_encoder_give_its_output():
    # timm's rule: kernels repeated k times and divided by k, so k identical channels = 1 channel.
    model = load_model("unet3d_genesis.chest_ct", random_init=True)
    single = build_segmenter(copy.deepcopy(model), 2).eval()
    multi = build_segmenter(model, 2, in_channels=4).eval()
    x = _rand(2, 1, 16, 16, 8)
    with torch.no_grad():
        torch.testing.assert_close(multi(x.repeat(1, 4, 1, 1, 1)), single(x), atol=1e-5, rtol=1e-4)
    with pytest.raises(ConfigError, match="expected \\(B, 4"):
        multi(x)


def test_one_channel_into_an_rgb_encoder_is_the_grey_image_shown_as_rgb():
    model = load_model("timm:resnet10t", random_init=True)
    rgb = build_segmenter(copy.deepcopy(model), 2).eval()
    grey = build_segmenter(model, 2, in_channels=1).eval()
    x = _rand(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.repeat(1, 3, 1, 1)), atol=0, rtol=0)


def test_four_channels_into_an_rgb_encoder_cycle_its_kernels_and_statistics():
    model = load_model("timm:resnet10t", random_init=True)
    before = model.network.conv1[0].weight.detach().clone()
    mean = model.input_mean.flatten().tolist()
    segmenter = build_segmenter(model, 2, in_channels=4)
    after = segmenter.encoder.network.conv1[0].weight
    assert after.shape[1] == 4
    for i in range(4):
        torch.testing.assert_close(after[:, i], before[:, i % 3] * 3 / 4)
    torch.testing.assert_close(
        segmenter.encoder.input_mean.flatten(), torch.tensor([*mean, mean[0]])
    )
    assert segmenter(_rand(2, 4, 32, 32)).shape == (2, 2, 32, 32)
    # The card stays the encoder's own (3 channels): what a reloaded file is rebuilt from.
    assert segmenter.card.in_channels == 3 and segmenter.in_channels == 4


def test_a_monai_3d_resnet_gets_a_unet_decoder():
    model = load_model("monai:resnet10", random_init=True)
    segmenter = build_segmenter(model, 3)
    assert segmenter.input_divisor == 16  # stride-1 first conv, max-pool and three stride-2 layers
    assert segmenter(_rand(2, 1, 32, 16, 32)).shape == (2, 3, 32, 16, 32)
    with pytest.raises(ConfigError, match="divisible by 16; 24 is not"):
        segmenter(_rand(2, 1, 32, 24, 32))


def test_monai_unet_is_monais_network_as_documented():
    from monai.networks.nets import UNet

    segmenter = build_segmenter("monai_unet", 3, in_channels=2, seed=4)
    assert isinstance(segmenter, MonaiUNetSegmenter)
    torch.manual_seed(4)
    reference = UNet(3, 2, 3, (16, 32, 64, 128, 256), (2, 2, 2, 2), num_res_units=2, norm="batch")
    x = _rand(2, 2, 16, 16, 16)
    torch.testing.assert_close(segmenter(x), reference(x))
    assert encoder_parameters(segmenter) == []
    assert len(decoder_parameters(segmenter)) == len(list(reference.parameters()))
    assert segmenter.input_divisor == 16


def test_new_layers_are_seeded():
    model = load_model("timm:resnet10t", random_init=True)
    a = build_segmenter(copy.deepcopy(model), 2, seed=1)
    b = build_segmenter(copy.deepcopy(model), 2, seed=1)
    c = build_segmenter(model, 2, seed=2)
    torch.testing.assert_close(a.head.weight, b.head.weight, atol=0, rtol=0)
    assert not torch.equal(a.head.weight, c.head.weight)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_classes": 1}, "at least 2"),
        ({"num_classes": 2, "decoder": "fpn"}, "decoder 'fpn'"),
    ],
)
def test_bad_arguments_are_refused(kwargs, message):
    model = load_model("timm:resnet10t", random_init=True)
    with pytest.raises(ConfigError, match=message):
        build_segmenter(model, **kwargs)


def test_models_without_stages_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="monai:resnet"):
        build_segmenter(load_model("monai:densenet121", random_init=True), 2)
    with pytest.raises(ConfigError, match="'monai_unet'"):
        build_segmenter("unet", 2)
