"""The 2D Genesis U-Net (smp U-Net on timm's ResNet-18) and its card."""

import pytest
import torch

from medfound.errors import ConfigError
from medfound.models import build_model, get_card, load_model
from medfound.models.backbones import GenesisEncoder
from medfound.models.unet2d import UNet2D
from medfound.models.weights import load_state, save_safetensors

NAME = "unet2d_genesis.resnet18"


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model(get_card(NAME))


def _rand(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_card_describes_a_2d_genesis_model_without_published_weights():
    card = get_card(NAME)
    assert (card.family, card.spatial_dims, card.in_channels, card.input_size) == (
        "genesis2d",
        2,
        1,
        224,
    )
    assert card.preset == "cxr" and card.embedding_dim == 512
    assert card.weights_source.startswith("none published: pretrain with medfound pretrain genesis")


def test_encode_levels_and_decode_restore_the_input_size(model):
    net = model.network
    x = _rand(2, 1, 64, 96)
    with torch.inference_mode():
        levels = net.encode(x)
        restored = net.decode(levels)
        whole = net(x)
        reference = torch.sigmoid(net.unet(x))  # smp's own forward, decoder fed as it feeds it
    assert net.encoder_channels == (64, 64, 128, 256, 512)
    assert [tuple(lv.shape) for lv in levels] == [
        (2, c, 64 // 2**i, 96 // 2**i) for i, c in enumerate(net.encoder_channels, start=1)
    ]
    assert restored.shape == x.shape and 0 < float(restored.min()) <= float(restored.max()) < 1
    torch.testing.assert_close(restored, whole, rtol=0, atol=0)
    torch.testing.assert_close(whole, reference)
    torch.testing.assert_close(torch.sigmoid(net.decode(levels, logits=True)), whole)


def test_embedding_is_the_pooled_deepest_level(model):
    assert isinstance(model, GenesisEncoder) and isinstance(model.network, UNet2D)
    x = _rand(2, 1, 64, 64)
    with torch.inference_mode():
        stages = model.forward_stages(x)
        embedding = model(x)
    assert model.stage_names == ("act1", "layer1", "layer2", "layer3", "layer4")
    assert len(stages) == 5 and embedding.shape == (2, 512)
    torch.testing.assert_close(embedding, stages[-1].mean(dim=(2, 3)))


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 1, 48, 64), r"UNet2D input of shape \(1, 1, 48, 64\): .*divisible by 32.*48 is not"),
        ((1, 3, 64, 64), r"expected \(B, 1, \.\.\., \.\.\.\)"),
    ],
)
def test_inputs_it_cannot_take_are_refused(model, shape, message):
    with pytest.raises(ConfigError, match=message):
        model.network(torch.zeros(shape))


def test_weights_round_trip_and_one_channel_weights_expand(model, tmp_path):
    path = tmp_path / "g2d.safetensors"
    save_safetensors(model.network, path, get_card(NAME).to_json())
    loaded = load_model(NAME, path)
    x = _rand(2, 1, 64, 64)
    three = UNet2D(in_channels=3).eval()
    load_state(three, model.network.state_dict(), path)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.network(x), model.network(x), rtol=0, atol=0)
        torch.testing.assert_close(three(x.repeat(1, 3, 1, 1)), model.network(x))
