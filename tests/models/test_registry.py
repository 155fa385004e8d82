import pytest
import torch

from medfound.errors import UnknownModelError, WeightsError
from medfound.models import build_model, get_card, list_models, load_model
from medfound.models.unet2d import UNet2D
from medfound.models.unet3d import UNet3D

REGISTERED = [c.name for c in list_models()]
# A real forward for one card per architecture; every card is checked on the meta device. The
# transformers (up to 1.1 B parameters) run for real at a tiny width in test_vit_layouts.py.
ONE_PER_ARCHITECTURE = list(
    {c.architecture: c.name for c in list_models() if c.family != "vit"}.values()
)
VIT = {
    "vit_large_patch16_224.uni_mass100k",
    "vit_giant_patch14_224.uni2_h",
    "vit_huge_patch14_224.virchow",
    "vit_huge_patch14_224.virchow2",
    "vit_giant_patch14_dinov2.prov_gigapath",
    "vit_giant_patch14_reg4_dinov2.h_optimus_0",
    "vit_base_patch16_224.phikon",
    "vit_large_patch16_224.phikon_v2",
    "swin_tiny_patch4_window7_224.ctranspath",
    "vit_base_patch14_dinov2.rad_dino",
    "vit_base_patch16_224.biomedclip",
    "samvit_base_patch16.medsam",
}
GENERIC = ["timm:resnet18", "monai:resnet10", "monai:densenet121", "simclr:r50x2"]


def test_registry_has_the_documented_models():
    expected = (
        {
            f"resnetv2_{w}_bit.remedis_{m}_{i}"
            for m in ("cxr", "path")
            for w in ("50x1", "152x2")
            for i in "sm"
        }
        | {f"resnetv2_{w}_bit.bit_{i}" for i in ("s_in1k", "m_in21k") for w in ("50x1", "152x2")}
        | {"unet3d_genesis.chest_ct", "unet3d_genesis_w8.mri", "unet2d_genesis.resnet18"}
        | VIT
    )
    assert expected == set(REGISTERED)
    assert get_card("cxr-50x1-remedis-m").input_size == 448
    assert get_card("path-152x2-remedis-s").embedding_dim == 4096


def _built_architecture(network: torch.nn.Module) -> str:
    """The architecture the built network itself reports, independent of the card."""
    if isinstance(network, UNet3D):
        width = network.encoder[0].convs[0][0].out_channels  # the first convolution's channels
        return "unet3d-genesis" if width == 32 else f"unet3d-genesis-w{width}"
    if isinstance(network, UNet2D):
        assert network.encoder_name == "resnet18"  # the encoder of Genesis 2D
        return "unet2d-genesis"
    network = getattr(network, "trunk", network)  # a CLIP tower's trunk
    return network.pretrained_cfg["architecture"]  # what timm says it created


@pytest.mark.parametrize("card", list_models(), ids=lambda card: card.name)
def test_every_card_describes_its_own_network(card):
    # Each card's own build, on the meta device: shapes without memory or arithmetic, so the
    # 152x2 networks cost nothing and run at the card's full input size.
    with torch.device("meta"):
        model = build_model(card)
        size = card.input_size
        size = size if isinstance(size, tuple) else (size,) * card.spatial_dims
        x = torch.empty(2, card.in_channels, *size)
        embedding = model(x)
        stages = model.forward_stages(x)
    assert model.card is card
    assert _built_architecture(model.network) == card.architecture
    conv = (torch.nn.Conv2d, torch.nn.Conv3d)[card.spatial_dims - 2]
    first = next(m for m in model.network.modules() if isinstance(m, torch.nn.modules.conv._ConvNd))
    assert isinstance(first, conv) and first.in_channels == card.in_channels
    assert embedding.shape == (2, card.embedding_dim)
    if card.family != "vit":  # a transformer's embedding is not its last stage map pooled
        assert stages[-1].shape[:2] == (2, card.embedding_dim)
    assert stages[-1].ndim == 2 + len(size)
    assert len(stages) == len(model.stage_names)
    contract = (1, card.in_channels) + (1,) * card.spatial_dims  # normalisation per input channel
    assert model.input_mean.shape == model.input_std.shape == contract


@pytest.mark.parametrize("name", ONE_PER_ARCHITECTURE + GENERIC)
def test_every_model_builds_with_documented_embedding(name):
    card = get_card(name)
    model = build_model(card)
    size = (16, 16, 8) if card.spatial_dims == 3 else (32, 32)
    if card.family == "monai":
        size = (32, 32, 32)
    x = torch.rand(2, card.in_channels, *size)
    with torch.inference_mode():
        embedding = model(x)
        stages = model.forward_stages(x)
    assert embedding.shape == (2, card.embedding_dim)
    assert torch.isfinite(embedding).all()
    assert stages[-1].shape[1] == card.embedding_dim
    assert len(stages) == len(model.stage_names)
    torch.testing.assert_close(model.pool(stages[-1]), embedding)


def test_genesis_unet_parameter_counts():
    net = UNet3D()
    assert sum(p.numel() for p in net.parameters()) == 19_073_665
    assert sum(p.numel() for p in net.encoder.parameters()) == 7_027_776
    with torch.inference_mode():
        out = net.eval()(torch.rand(1, 1, 16, 16, 8))
    assert out.shape == (1, 1, 16, 16, 8) and 0 <= float(out.min()) <= float(out.max()) <= 1


def test_bit_model_maps_unit_input_to_minus_one_one():
    model = build_model(get_card("cxr-50x1-remedis-m"))
    x = torch.tensor([0.0, 0.5, 1.0]).view(1, 3, 1, 1)
    assert model.normalise(x).flatten().tolist() == [-1.0, 0.0, 1.0]


def test_no_silent_random_weights():
    with pytest.raises(WeightsError, match=r"needs weights .*PhysioNet.*--random-init"):
        load_model("path-50x1-remedis-s")
    model = load_model("timm:resnet18", random_init=True)
    assert model.random_init and model.weights_sha256 is None


def test_unknown_names():
    with pytest.raises(UnknownModelError, match="unknown model 'resnet'"):
        get_card("resnet")
    with pytest.raises(UnknownModelError, match="timm has no model"):
        get_card("timm:no_such_net")
    with pytest.raises(UnknownModelError, match="monai:unet is not supported"):
        get_card("monai:unet")


def test_bit_standardises_weights_as_the_originals_do_even_when_they_vary_little():
    from timm.layers import StdConv2d

    model = build_model(get_card("resnetv2_50x1_bit.remedis_cxr_m"))
    convs = [m for m in model.modules() if isinstance(m, StdConv2d)]
    assert convs and all(m.eps == 1e-10 for m in convs)  # BiT's TF2/JAX/PyTorch value
    conv = convs[1]
    with torch.no_grad():
        conv.weight.copy_(torch.randn_like(conv.weight) * 1e-4)  # variance 1e-8
        x = torch.randn(1, conv.in_channels, 6, 6)
        tiny = conv(x)
        conv.weight.mul_(1e4)  # standardisation makes the scale of the weights irrelevant
        torch.testing.assert_close(tiny, conv(x), rtol=0.02, atol=1e-3)  # 1e-8: 41% off
    other = build_model(get_card("timm:resnet18"))
    assert not any(isinstance(m, StdConv2d) for m in other.modules())
