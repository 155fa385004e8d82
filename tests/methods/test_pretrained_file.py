"""The exported weight file of a pretraining method: card, input contract, provenance."""

import json

from safetensors import safe_open

from medfound.methods.pretrained_file import save_pretrained
from medfound.models import load_model
from medfound.models.weights import card_in_file


def test_the_file_keeps_the_input_contract_the_model_applied(tmp_path):
    plain = load_model("unet3d_genesis.chest_ct", random_init=True)
    save_pretrained(plain, tmp_path / "a.safetensors", method="genesis", description="x",
                    provenance={"data": {"images": 3}})  # fmt: skip
    card = card_in_file(tmp_path / "a.safetensors")
    assert card["input_mean"] is None and card["description"].endswith("; x")
    assert card["weights_source"].startswith("medfound pretrain genesis")

    converted = load_model("unet3d_genesis.chest_ct", random_init=True)
    converted.set_input_contract((0.25,), (0.5,))  # e.g. a starting point with its own scaling
    save_pretrained(converted, tmp_path / "b.safetensors", method="genesis", description="x",
                    provenance={})  # fmt: skip
    card = card_in_file(tmp_path / "b.safetensors")
    assert (card["input_mean"], card["input_std"]) == ([0.25], [0.5])
    reloaded = load_model("unet3d_genesis.chest_ct", tmp_path / "b.safetensors")
    assert reloaded.input_mean.flatten().tolist() == [0.25]
    with safe_open(str(tmp_path / "a.safetensors"), framework="pt") as fh:
        made = json.loads(fh.metadata()["medfound_pretraining"])
    assert made == {"method": "genesis", "data": {"images": 3}}
