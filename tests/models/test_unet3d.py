"""The Genesis 3D U-Net: size, separable halves, BatchNorm modes, memory layouts, the name map."""

import pytest
import torch
from torch import nn

from medfound.errors import ConfigError, WeightsError
from medfound.models import build_model, genesis_names, get_card
from medfound.models.unet3d import UNet3D, use_batch_statistics
from medfound.models.weights import expand_input_conv, load_state
from tests.convert.genesis_original import OriginalGenesisUNet3D


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return UNet3D().eval()


def _rand(*shape, seed=1):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_parameter_counts_of_the_published_network(net):
    assert sum(p.numel() for p in net.parameters()) == 19_073_665
    assert sum(p.numel() for p in net.encoder.parameters()) == 7_027_776


def test_the_small_card_is_the_same_network_a_quarter_as_wide():
    from medfound.errors import UnknownModelError
    from medfound.models.backbones import genesis_width

    model = build_model(get_card("unet3d_genesis_w8.mri"))
    assert sum(p.numel() for p in model.network.parameters()) == 1_193_761
    assert [n for n, _ in model.network.named_parameters()] == [
        n for n, _ in UNet3D().named_parameters()
    ]
    x = _rand(2, 1, 16, 16, 8)
    with torch.inference_mode():
        assert model.embed(x).shape == (2, 128)
        assert model.network(x).shape == x.shape
    assert genesis_width("unet3d-genesis") == 32 and genesis_width("unet3d-genesis-w16") == 16
    for bad in ("unet3d-genesis-wide", "unet3d-genesis-w", "unet3d-genesis-w0", "unet3d-w8"):
        with pytest.raises(UnknownModelError, match=bad):
            genesis_width(bad)


@pytest.mark.parametrize("size", [(16, 16, 8), (24, 8, 40)])
def test_encode_decode_are_the_forward_at_any_size_divisible_by_8(net, size):
    x = _rand(2, 1, *size)
    with torch.inference_mode():
        levels = net.encode(x)
        restored = net.decode(levels)
        logits = net.decode(levels, logits=True)
        whole = net(x)
    assert [lv.shape[1] for lv in levels] == [64, 128, 256, 512]
    assert [tuple(lv.shape[2:]) for lv in levels] == [
        tuple(s // 2**i for s in size) for i in range(4)
    ]
    assert restored.shape == (2, 1, *size)
    torch.testing.assert_close(restored, whole, rtol=0, atol=0)
    torch.testing.assert_close(torch.sigmoid(logits), whole)
    assert 0 < float(whole.min()) <= float(whole.max()) < 1


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        (
            (1, 1, 30, 16, 8),
            r"shape \(1, 1, 30, 16, 8\): spatial sizes must be divisible by 8.*30 is",
        ),
        ((1, 1, 16, 12, 4), r"divisible by 8 .*12, 4 are not"),
        ((1, 2, 16, 16, 8), r"UNet3D input of shape \(1, 2, 16, 16, 8\): expected \(B, 1, "),
        ((1, 16, 16, 8), r"input of shape \(1, 16, 16, 8\): expected"),
    ],
)
def test_inputs_it_cannot_take_are_refused_naming_the_shape(net, shape, message):
    with pytest.raises(ConfigError, match=message):
        net(torch.zeros(shape))


def test_eval_mode_output_is_independent_of_the_batch_unless_compatibility_is_asked():
    torch.manual_seed(0)
    model = build_model(get_card("unet3d_genesis.chest_ct"))  # eval mode, whole U-Net inside
    a, b, c = _rand(1, 1, 16, 16, 8, seed=1), _rand(1, 1, 16, 16, 8, seed=2), _rand(1, 1, 16, 16, 8)
    net = model.network
    with torch.inference_mode():
        alone = net(a)
        torch.testing.assert_close(net(torch.cat([a, b]))[:1], alone)
        torch.testing.assert_close(net(torch.cat([a, 2 * c]))[:1], alone)
        assert use_batch_statistics(model) is model  # on the wrapper: reaches its network
        compat_ab, compat_ac = net(torch.cat([a, b]))[:1], net(torch.cat([a, 2 * c]))[:1]
        assert (compat_ab - compat_ac).abs().max() > 1e-3  # the original's behaviour
        use_batch_statistics(net, on=False)
        torch.testing.assert_close(net(torch.cat([a, b]))[:1], alone)
    compat = UNet3D(compat_batchnorm=True)
    assert all(m.batch_statistics for m in compat.modules() if isinstance(m, nn.BatchNorm3d))
    with pytest.raises(ConfigError, match="Genesis 3D U-Net only"):
        use_batch_statistics(nn.Sequential(nn.BatchNorm2d(3)))


def test_compatibility_mode_leaves_running_statistics_alone(net):
    before = {k: v.clone() for k, v in net.state_dict().items()}
    use_batch_statistics(net)
    try:
        with torch.no_grad():
            net(_rand(2, 1, 16, 16, 8))
    finally:
        use_batch_statistics(net, on=False)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_channels_last_3d_gives_the_default_layout_output(net):
    x = _rand(2, 1, 16, 16, 16)
    fast = UNet3D().eval()
    fast.load_state_dict(net.state_dict())
    fast = fast.to(memory_format=torch.channels_last_3d)
    with torch.inference_mode():
        out = fast(x.contiguous(memory_format=torch.channels_last_3d))
        torch.testing.assert_close(out, net(x), rtol=1e-4, atol=1e-5)


def test_bf16_autocast_runs_on_cpu_close_to_fp32(net):
    x = _rand(2, 1, 16, 16, 8)
    with torch.inference_mode():
        reference = net(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = net(x)
    assert low.dtype == torch.bfloat16 and low.shape == reference.shape
    assert float((low.float() - reference).abs().max()) < 0.03


def test_name_map_covers_the_106_original_entries_one_to_one(net):
    original = OriginalGenesisUNet3D()
    original_shapes = {k: tuple(v.shape) for k, v in original.state_dict().items()}
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    mapping = genesis_names.ORIGINAL_TO_MEDFOUND
    assert len(original_shapes) == len(mapping) == 106
    assert set(mapping) == set(original_shapes)
    assert sorted(mapping.values()) == sorted(ours)  # onto every medfound key, none twice
    assert all(ours[mapping[k]] == shape for k, shape in original_shapes.items())
    assert mapping["down_tr64.ops.0.conv1.weight"] == "encoder.0.convs.0.0.weight"
    assert mapping["down_tr512.ops.1.bn1.running_mean"] == "encoder.3.convs.1.1.running_mean"
    assert mapping["up_tr256.up_conv.weight"] == "decoder.0.up.weight"
    assert mapping["up_tr64.ops.0.conv1.weight"] == "decoder.2.convs.0.0.weight"
    assert mapping["out_tr.final_conv.weight"] == "head.weight"
    assert sum(genesis_names.is_encoder(k) for k in mapping) == 56


def test_original_layout_is_recognised_with_or_without_the_wrapper(net):
    original = OriginalGenesisUNet3D().state_dict()
    assert genesis_names.is_original_layout(original)
    assert genesis_names.is_original_layout({f"module.{k}": v for k, v in original.items()})
    assert not genesis_names.is_original_layout(net.state_dict())
    wrapped = {f"module.{k}": v for k, v in original.items()}
    assert set(genesis_names.to_medfound(wrapped)) == set(net.state_dict())


def test_expand_input_conv_answers_a_duplicated_channel_as_the_original():
    weight = _rand(4, 1, 3, 3, 3)
    x = _rand(1, 1, 6, 6, 6, seed=2)
    wide = expand_input_conv(weight, 3)
    assert wide.shape == (4, 3, 3, 3, 3)
    torch.testing.assert_close(
        nn.functional.conv3d(x.repeat(1, 3, 1, 1, 1), wide), nn.functional.conv3d(x, weight)
    )


def test_two_channel_model_takes_one_channel_weights_only_at_the_first_conv(net):
    two = UNet3D(in_channels=2).eval()
    load_state(two, net.state_dict(), "one.safetensors")
    x = _rand(2, 1, 16, 16, 8)
    with torch.inference_mode():
        torch.testing.assert_close(two(torch.cat([x, x], 1)), net(x))
    three = UNet3D(in_channels=3).state_dict()
    with pytest.raises(WeightsError, match=r"shape: encoder\.0\.convs\.0\.0\.weight: file \(32, 3"):
        load_state(two, three, "three.safetensors")  # only 1 -> k is expanded
    with pytest.raises(
        WeightsError, match=r"shape: head\.weight: file \(1, 64, 1, 1, 1\) vs model"
    ):
        load_state(UNet3D(out_channels=2), net.state_dict(), "one.safetensors")
