"""The original Models Genesis checkpoint, loaded directly and through `convert genesis`."""

import dataclasses
import logging

import pytest
import torch
from safetensors import safe_open
from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.convert.genesis import convert_genesis
from medfound.errors import WeightsError
from medfound.models import build_model, get_card, load_model
from medfound.models.genesis_names import ORIGINAL_TO_MEDFOUND
from medfound.models.unet3d import use_batch_statistics
from medfound.models.weights import load_state, read_state
from tests.convert import genesis_original

NAME = "unet3d_genesis.chest_ct"


@pytest.fixture(scope="module")
def original():
    return genesis_original.randomised(seed=3)


@pytest.fixture(scope="module")
def release(tmp_path_factory, original):
    return genesis_original.save_release(
        original, tmp_path_factory.mktemp("genesis") / "Genesis_Chest_CT.pt"
    )


@pytest.fixture
def x():
    return torch.rand(3, 1, 16, 16, 8, generator=torch.Generator().manual_seed(1))


def _edited_release(tmp_path, original, edit):
    state = dict(original.state_dict())
    edit(state)
    return genesis_original.save_release(original, tmp_path / "edited.pt", state)


def test_release_loads_directly_every_tensor_in_place(release, original, x, caplog):
    with caplog.at_level(logging.INFO, logger="medfound"):
        model = load_model(NAME, release)
    assert "original Models Genesis checkpoint: 106 tensors mapped" in caplog.text
    assert "epoch 3" in caplog.text and "optimizer_state_dict" in caplog.text
    ours = model.network.state_dict()
    for name, value in original.state_dict().items():
        assert torch.equal(ours[ORIGINAL_TO_MEDFOUND[name]], value), name
    use_batch_statistics(model)
    with torch.inference_mode():
        torch.testing.assert_close(model.network(x), original(x), rtol=0, atol=1e-5)


def test_convert_command_writes_medfound_weights_that_load(release, original, x, tmp_path):
    out = tmp_path / "genesis.safetensors"
    result = CliRunner().invoke(
        app, ["convert", "genesis", str(release), "--out", str(out)], env={"COLUMNS": "1000"}
    )
    assert result.exit_code == 0, result.output
    assert "mapped 106 tensors" in result.output and "'module.' prefix stripped" in result.output
    with safe_open(str(out), framework="pt") as fh:
        keys = set(fh.keys())
        assert fh.metadata()["converted_from"] == "Genesis_Chest_CT.pt"
    assert keys == set(ORIGINAL_TO_MEDFOUND.values())
    model = use_batch_statistics(load_model(NAME, out))
    with torch.inference_mode():
        torch.testing.assert_close(model.network(x), original(x), rtol=0, atol=1e-5)
        direct = use_batch_statistics(load_model(NAME, release))
        torch.testing.assert_close(model.network(x), direct.network(x), rtol=0, atol=0)


def test_one_renamed_key_fails_naming_it(tmp_path, original):
    def rename(state):
        state["down_tr128.ops.1.bn1.running_varx"] = state.pop("down_tr128.ops.1.bn1.running_var")

    path = _edited_release(tmp_path, original, rename)
    with pytest.raises(WeightsError) as err:
        load_model(NAME, path)
    message = str(err.value)
    assert "edited.pt: original Models Genesis checkpoint does not match" in message
    assert "1 missing: down_tr128.ops.1.bn1.running_var;" in message
    assert "1 unexpected: down_tr128.ops.1.bn1.running_varx" in message
    with pytest.raises(WeightsError, match=r"running_varx"):
        convert_genesis(path, tmp_path / "never.safetensors")
    assert not (tmp_path / "never.safetensors").exists()


def test_missing_encoder_key_is_fatal_and_every_key_is_listed(tmp_path, original):
    gone = [
        k for k in original.state_dict() if k.startswith("down_tr256.")
    ]  # 14 > 8 shown elsewhere
    path = _edited_release(tmp_path, original, lambda s: [s.pop(k) for k in gone])
    with pytest.raises(WeightsError) as err:
        load_model(NAME, path)
    message = str(err.value)
    assert f"{len(gone)} missing: " in message and "14 problem(s) in the encoder" in message
    assert all(k in message for k in gone)


def test_decoder_mismatch_is_fatal_too(tmp_path):
    two_class = genesis_original.randomised(seed=4, out_channels=2)  # a fine-tuned head
    path = genesis_original.save_release(two_class, tmp_path / "seg.pt")
    with pytest.raises(WeightsError, match=r"0 problem\(s\) in the encoder") as err:
        load_model(NAME, path)
    assert "shape: out_tr.final_conv.weight: file (2, 64, 1, 1, 1) vs model (1, 64, 1, 1, 1)" in (
        str(err.value)
    )


def test_one_channel_release_expands_to_two_channel_model(release, caplog):
    one = load_model(NAME, release)
    card = dataclasses.replace(get_card(NAME), in_channels=2)
    two = build_model(card)
    state, _ = read_state(release, two.network)
    with caplog.at_level(logging.INFO, logger="medfound"):
        load_state(two.network, state, release)
    assert (
        "first conv encoder.0.convs.0.0.weight expanded from 1 to 2 input channels" in caplog.text
    )
    x = torch.rand(2, 1, 16, 16, 8)
    with torch.inference_mode():  # eval mode: running statistics, independent of the batch
        torch.testing.assert_close(two.network(torch.cat([x, x], 1)), one.network(x))
        assert not torch.allclose(two.network(torch.cat([x, 0 * x], 1)), one.network(x))


def test_release_into_another_network_is_refused(release):
    with pytest.raises(WeightsError, match=r"Genesis_Chest_CT\.pt: holds the original Models Gen"):
        load_model("unet2d_genesis.resnet18", release)


def test_what_is_not_an_original_checkpoint_is_refused(tmp_path):
    model = build_model(get_card(NAME))
    torch.save({"state_dict": model.network.state_dict()}, tmp_path / "ours.pt")
    with pytest.raises(WeightsError, match="not an original Models Genesis checkpoint"):
        convert_genesis(tmp_path / "ours.pt", tmp_path / "x.safetensors")
    with pytest.raises(WeightsError, match="but --model 'timm:resnet18' is a 'resnet18'"):
        convert_genesis(tmp_path / "ours.pt", tmp_path / "x.safetensors", model="timm:resnet18")
