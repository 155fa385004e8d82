import json

import numpy as np
import pytest
import torch

from medfound.errors import ConfigError
from medfound.models import load_model
from medfound.tasks.export import export_model, output_names


@pytest.fixture(scope="module")
def bit():
    return load_model("cxr-50x1-remedis-m", random_init=True)


def test_onnx_parity_with_pytorch(tmp_path, bit):
    import onnx
    import onnxruntime as ort

    path = export_model(bit, tmp_path / "m.onnx", "onnx", image_size=64)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(3, 3, 64, 64)  # another batch size than the export example
    got = session.run(None, {"image": x.numpy()})
    with torch.inference_mode():
        embedding = bit(x)
        stages = bit.forward_stages(x)
    assert [o.name for o in session.get_outputs()] == output_names(bit)
    # float32 through 50 layers: compare against each output's own scale
    for onnx_out, torch_out in zip(got, [embedding, *stages], strict=True):
        scale = float(np.abs(torch_out.numpy()).max())
        assert onnx_out.shape == tuple(torch_out.shape)
        assert np.abs(onnx_out - torch_out.numpy()).max() <= 1e-4 * scale
    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    card = json.loads(props["medfound_card"])
    assert card["name"] == "resnetv2_50x1_bit.remedis_cxr_m" and card["input_mean"] == [
        0.5,
        0.5,
        0.5,
    ]
    assert props["weights_sha256"] == "random-init"


def test_torchscript_with_card(tmp_path, bit):
    path = export_model(bit, tmp_path / "m.pt", "torchscript", image_size=64)
    files = {"medfound_metadata.json": ""}
    scripted = torch.jit.load(str(path), _extra_files=files)
    x = torch.rand(2, 3, 64, 64)
    with torch.inference_mode():
        torch.testing.assert_close(scripted(x)[0], bit(x), rtol=1e-5, atol=1e-5)
    assert (
        json.loads(json.loads(files["medfound_metadata.json"])["medfound_card"])["embedding_dim"]
        == 2048
    )


def test_safetensors_export_loads_back(tmp_path, bit):
    path = export_model(bit, tmp_path / "m.safetensors", "safetensors")
    again = load_model("cxr-50x1-remedis-m", path)
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(again.embed(x), bit.embed(x))


def test_unknown_format(tmp_path, bit):
    with pytest.raises(ConfigError, match="--format must be one of"):
        export_model(bit, tmp_path / "m.x", "tflite")
