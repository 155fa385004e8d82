import pytest
import torch

from medfound.errors import UnknownModelError, WeightsError
from medfound.models import build_model, get_card, list_models, load_model
from medfound.models.unet3d import UNet3D

REGISTERED = [c.name for c in sorted(list_models(), key=lambda c: c.architecture)]
GENERIC = ["timm:resnet18", "monai:resnet10", "monai:densenet121", "simclr:r50x2"]
_built: dict[str, torch.nn.Module] = {}


def _model(name):
    card = get_card(name)
    key = f"{card.family}:{card.architecture}"
    if key not in _built:  # cards that share an architecture share one (slow) build
        _built.clear()
        _built[key] = build_model(card)
    model = _built[key]
    model.card = card
    return model


def test_registry_has_the_documented_models():
    expected = (
        {f"{m}-{w}-remedis-{i}" for m in ("cxr", "path") for w in ("50x1", "152x2") for i in "sm"}
        | {f"bit-{i}-r{w}" for i in "sm" for w in ("50x1", "152x2")}
        | {"genesis-chest-ct"}
    )
    assert expected == set(REGISTERED)
    assert get_card("cxr-50x1-remedis-m").input_size == 448
    assert get_card("path-152x2-remedis-s").embedding_dim == 4096


@pytest.mark.parametrize("name", REGISTERED + GENERIC)
def test_every_model_builds_with_documented_embedding(name):
    card = get_card(name)
    model = _model(name)
    size = (16, 16, 8) if card.spatial_dims == 3 else (64, 64)
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
    model = _model("cxr-50x1-remedis-m")
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
