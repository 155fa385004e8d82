import numpy as np
import pytest
import torch

from medfound.errors import WeightsError
from medfound.models import build_model, get_card, load_model
from medfound.models.bit_names import bit_name, state_to_bit
from medfound.models.weights import save_safetensors


@pytest.fixture(scope="module")
def bit_model():
    torch.manual_seed(1)
    model = build_model(get_card("bit-m-r50x1"))
    with torch.no_grad():  # GroupNorm starts at 1/0: randomise so a mix-up of gamma/beta shows
        for name, p in model.network.named_parameters():
            if "norm" in name:
                p.normal_(0.5, 0.2)
    return model


def test_bit_npz_round_trip(tmp_path, bit_model):
    arrays = state_to_bit(bit_model.network.state_dict(), prefix="resnet/")
    assert "resnet/block4/unit03/c/standardized_conv2d/kernel" in arrays
    assert arrays["resnet/root_block/standardized_conv2d/kernel"].shape == (7, 7, 3, 64)  # HWIO
    arrays["resnet/head/conv2d/kernel"] = np.zeros((1, 1, 2048, 10), np.float32)  # ignored head
    np.savez(tmp_path / "BiT-M-R50x1.npz", **arrays)
    loaded = load_model("bit-m-r50x1", tmp_path / "BiT-M-R50x1.npz")
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), bit_model(x), rtol=0, atol=0)
    assert len(loaded.weights_sha256) == 64


def test_bit_npz_missing_tensor_is_named(tmp_path, bit_model):
    arrays = state_to_bit(bit_model.network.state_dict())
    del arrays["resnet/block2/unit01/a/proj/standardized_conv2d/kernel"]
    np.savez(tmp_path / "broken.npz", **arrays)
    with pytest.raises(
        WeightsError, match=r"broken\.npz: .*1 missing: stages\.1\.blocks\.0\.downsample"
    ):
        load_model("bit-m-r50x1", tmp_path / "broken.npz")


def test_bit_names_cover_every_parameter(bit_model):
    names = [bit_name(k) for k in bit_model.network.state_dict()]
    assert len(names) == len(set(names))


def test_wrong_depth_or_width_checkpoint_is_refused(tmp_path):
    small = build_model(get_card("timm:resnet18"))
    state = small.network.state_dict()
    torch.save({"state_dict": state}, tmp_path / "r18.pt")
    with pytest.raises(WeightsError, match=r"r18\.pt: weights do not match .* missing: layer1\.2"):
        load_model("timm:resnet34", tmp_path / "r18.pt")
    state["conv1.weight"] = torch.zeros(32, 3, 7, 7)
    torch.save(state, tmp_path / "narrow.pt")
    with pytest.raises(
        WeightsError, match=r"1 shape: conv1\.weight: file \(32, 3, 7, 7\) vs model"
    ):
        load_model("timm:resnet18", tmp_path / "narrow.pt")


def test_torch_checkpoint_with_module_prefix_loads(tmp_path):
    model = build_model(get_card("timm:resnet18"))
    state = {f"module.{k}": v for k, v in model.network.state_dict().items()}
    state["module.fc.weight"] = torch.zeros(5, 512)  # classifier head: reported, not loaded
    torch.save({"state_dict": state, "epoch": 3}, tmp_path / "ckpt.pth")
    loaded = load_model("timm:resnet18", tmp_path / "ckpt.pth")
    x = torch.rand(1, 3, 32, 32)
    torch.testing.assert_close(loaded.embed(x), model.embed(x))


def test_unexpected_keys_are_refused(tmp_path):
    model = build_model(get_card("timm:resnet18"))
    state = dict(model.network.state_dict(), extra_layer_weight=torch.zeros(1))
    torch.save(state, tmp_path / "extra.pt")
    with pytest.raises(WeightsError, match="1 unexpected: extra_layer_weight"):
        load_model("timm:resnet18", tmp_path / "extra.pt")


def test_safetensors_card_carries_architecture_and_contract(tmp_path):
    model = build_model(get_card("timm:resnet18"))
    card = get_card("timm:resnet18")
    import dataclasses

    own = dataclasses.replace(card, name="my-encoder", input_mean=None, input_std=None)
    save_safetensors(model.network, tmp_path / "w.safetensors", own.to_json())
    loaded = load_model("timm:resnet18", tmp_path / "w.safetensors")
    assert loaded.input_mean.flatten().tolist() == [0.0, 0.0, 0.0]  # the file's contract wins
    with pytest.raises(WeightsError, match="holds a 'resnet18' network"):
        load_model("timm:resnet34", tmp_path / "w.safetensors")


def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_model("timm:resnet18", tmp_path / "nope.safetensors")
    (tmp_path / "w.xyz").write_bytes(b"123")
    with pytest.raises(WeightsError, match="unknown weight format"):
        load_model("timm:resnet18", tmp_path / "w.xyz")
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(WeightsError, match=r"bad\.safetensors: unreadable weight file"):
        load_model("timm:resnet18", tmp_path / "bad.safetensors")
