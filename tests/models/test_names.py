"""Model names in timm's `architecture.weight_tag` manner, wildcard filtering, the earlier names kept."""

import pytest
from typer.testing import CliRunner

from medfound.cli.main import app
from medfound.errors import UnknownModelError
from medfound.models import get_card, list_models

EARLIER = {
    "cxr-50x1-remedis-m": "resnetv2_50x1_bit.remedis_cxr_m",
    "path-152x2-remedis-s": "resnetv2_152x2_bit.remedis_path_s",
    "bit-m-r50x1": "resnetv2_50x1_bit.bit_m_in21k",
    "bit-s-r152x2": "resnetv2_152x2_bit.bit_s_in1k",
    "genesis-chest-ct": "unet3d_genesis.chest_ct",
}


def test_every_name_is_architecture_dot_weight_tag():
    for card in list_models():
        architecture, _, tag = card.name.partition(".")
        assert tag and architecture.replace("-", "_") == card.architecture.replace("-", "_")


@pytest.mark.parametrize(("alias", "name"), EARLIER.items())
def test_earlier_names_still_reach_their_model(alias, name):
    assert get_card(alias) is get_card(name)


def test_wildcards_filter_names_and_aliases():
    assert [c.name for c in list_models("resnetv2_152x2_bit.remedis_*_m")] == [
        "resnetv2_152x2_bit.remedis_cxr_m",
        "resnetv2_152x2_bit.remedis_path_m",
    ]
    assert [c.name for c in list_models("genesis-*")] == [
        "unet3d_genesis.chest_ct",
        "unet3d_genesis_w8.mri",
    ]
    assert len(list_models("resnetv2_*")) == 12 and list_models("nothing*") == []
    assert [c.name for c in list_models("*dinov2*")] == [
        "vit_giant_patch14_dinov2.prov_gigapath",
        "vit_giant_patch14_reg4_dinov2.h_optimus_0",
        "vit_base_patch14_dinov2.rad_dino",
    ]


def test_cli_filters_and_shows_aliases():
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "--filter", "*path_m"], terminal_width=200)
    assert listed.exit_code == 0
    assert "resnetv2_50x1_bit.remedis_path_m" in listed.stdout
    assert "resnetv2_152x2_bit.remedis_path_m" in listed.stdout and "cxr" not in listed.stdout
    shown = runner.invoke(app, ["models", "show", "cxr-50x1-remedis-m"], terminal_width=200)
    assert shown.exit_code == 0 and "resnetv2_50x1_bit.remedis_cxr_m" in shown.stdout
    assert "cxr-50x1-remedis-m" in shown.stdout.split("aliases")[1]
    none = runner.invoke(app, ["models", "--filter", "nothing*"])
    assert none.exit_code == 2 and "no registered model matches name 'nothing*'" in none.output
    with pytest.raises(UnknownModelError):
        get_card("nothing")
