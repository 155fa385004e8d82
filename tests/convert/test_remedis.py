import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors import safe_open

from medfound.convert.remedis import convert_remedis
from medfound.convert.savedmodel import read_savedmodel_variables
from medfound.convert.tf_comparison import relative_error, savedmodel_embedding
from medfound.errors import WeightsError
from medfound.models import load_model
from tests.convert import tf_bit


@pytest.fixture(scope="module")
def values():
    return tf_bit.random_values(tf_bit.bit_variable_specs())


@pytest.fixture(scope="module")
def object_model(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("sm") / "cxr-50x1-remedis-m"
    head = {"head_contrastive/dense/kernel": np.ones((2048, 128), np.float32)}
    tf_bit.save_object_based(path, values, scale_inputs=True, extra=head)
    return path


@pytest.fixture(scope="module")
def graph_model(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("sm") / "graph"
    tf_bit.save_graph_based(path, values, scale_inputs=False)
    return path


def _assert_close(ours, theirs):
    assert relative_error(ours, theirs) < 4e-4  # max |diff| over mean |embedding|: 1e-4-1.8e-4


def test_object_graph_names_are_recovered(object_model):
    variables = read_savedmodel_variables(object_model)
    assert variables.object_based
    assert "resnet/block1/unit02/b/group_norm/beta" in variables.arrays
    assert variables.arrays["resnet/root_block/standardized_conv2d/kernel"].shape == (7, 7, 3, 64)


@pytest.mark.parametrize("size", [224, 448])
def test_object_based_savedmodel_embeds_like_tensorflow(tmp_path, object_model, size):
    out = tmp_path / "cxr.safetensors"
    card = convert_remedis(object_model, out, network_input="symmetric")  # it scales inside
    assert card.name == "resnetv2_50x1_bit.remedis_cxr_m"  # from the folder name (an alias)
    x = np.random.default_rng(size).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    model = load_model("cxr-50x1-remedis-m", out)
    ours = model.embed(torch.from_numpy(x).permute(0, 3, 1, 2))
    _assert_close(ours, savedmodel_embedding(object_model, x))
    with safe_open(str(out), "pt") as fh:
        assert "extra/head_contrastive/dense/kernel" in set(fh.keys())  # kept for fine-tuning


def test_graph_based_savedmodel_with_prefix_and_optimiser_slots(tmp_path, graph_model):
    variables = read_savedmodel_variables(graph_model)
    assert not variables.object_based
    assert any(name.endswith("/Momentum") for name in variables.skipped)
    out = tmp_path / "g.safetensors"
    convert_remedis(graph_model, out, model="bit-m-r50x1", network_input="symmetric")
    x = np.random.default_rng(0).uniform(0, 1, (2, 224, 224, 3)).astype(np.float32)
    ours = load_model("bit-m-r50x1", out).embed(torch.from_numpy(x).permute(0, 3, 1, 2))
    # no scaling inside: a caller feeding it [-1, 1] gets what medfound computes from [0, 1]
    _assert_close(ours, savedmodel_embedding(graph_model, x * 2 - 1))


def test_input_contract_is_detected_and_recorded(tmp_path, object_model, graph_model):
    convert_remedis(object_model, tmp_path / "o.safetensors", network_input="auto")
    convert_remedis(graph_model, tmp_path / "g.safetensors", model="bit-s-r50x1")
    # scales inside -> the network needs [-1, 1]; passes [0, 1] on -> the network gets [0, 1]
    scaled = load_model("cxr-50x1-remedis-m", tmp_path / "o.safetensors")
    assert scaled.input_mean.flatten().tolist() == [0.5] * 3
    passed_on = load_model("bit-s-r50x1", tmp_path / "g.safetensors")
    assert passed_on.input_mean.flatten().tolist() == [0, 0, 0]
    with safe_open(str(tmp_path / "o.safetensors"), "pt") as fh:
        metadata = fh.metadata()
    assert metadata["network_input"] == "symmetric"
    assert metadata["network_input_source"].startswith("measured against TensorFlow")


def test_converts_without_tensorflow_and_reads_the_range_off_the_graph(
    tmp_path, object_model, graph_model
):
    scaled, passed_on = tmp_path / "scaled.safetensors", tmp_path / "passed_on.safetensors"
    code = (
        "import sys; sys.modules['tensorflow'] = None\n"  # any import of tensorflow now fails
        "from medfound.convert.remedis import convert_remedis\n"
        f"convert_remedis({str(object_model)!r}, {str(scaled)!r})\n"
        f"convert_remedis({str(graph_model)!r}, {str(passed_on)!r}, model='bit-s-r50x1')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for path, expected in ((scaled, "symmetric"), (passed_on, "unit")):
        with safe_open(str(path), "pt") as fh:
            metadata = fh.metadata()
        assert metadata["network_input"] == expected
        assert metadata["network_input_source"].startswith("read from the SavedModel graph")
    x = np.random.default_rng(1).uniform(0, 1, (1, 224, 224, 3)).astype(np.float32)
    ours = load_model("cxr-50x1-remedis-m", scaled).embed(torch.from_numpy(x).permute(0, 3, 1, 2))
    _assert_close(ours, savedmodel_embedding(object_model, x))
    ours = load_model("bit-s-r50x1", passed_on).embed(torch.from_numpy(x).permute(0, 3, 1, 2))
    _assert_close(ours, savedmodel_embedding(graph_model, x))


def test_graph_probe_reads_any_affine_input_transform(tmp_path, values):
    from medfound.convert.graph_probe import probe_input_transform

    tf_bit.save_object_based(
        tmp_path / "imagenet", values, scale_inputs=False, input_scale=(4.0, -0.5)
    )
    transform = probe_input_transform(tmp_path / "imagenet")
    assert transform is not None and transform.network_input() is None
    np.testing.assert_allclose([transform.scale[0], transform.shift[0]], [4.0, -0.5])


def test_wrong_model_size_is_refused(tmp_path, object_model):
    with pytest.raises(
        WeightsError,
        match=r"checkpoint is a resnetv2_50x1_bit, but 'resnetv2_152x2_bit.remedis_cxr_m'",
    ):
        convert_remedis(object_model, tmp_path / "x.safetensors", model="cxr-152x2-remedis-m")


def test_corrupt_savedmodels_give_clear_errors(tmp_path, object_model):
    import shutil

    broken = tmp_path / "cxr-50x1-remedis-m"
    shutil.copytree(object_model, broken)
    shard = next((broken / "variables").glob("variables.data-*"))
    shard.unlink()
    with pytest.raises(
        WeightsError, match=r"variables\.data-00000-of-00001: checkpoint data shard is missing"
    ):
        convert_remedis(broken, tmp_path / "x.safetensors", network_input="unit")
    index = broken / "variables" / "variables.index"
    index.write_bytes(index.read_bytes()[:-100])
    with pytest.raises(WeightsError, match=r"variables\.index: not a TensorFlow checkpoint index"):
        convert_remedis(broken, tmp_path / "x.safetensors", network_input="unit")
    with pytest.raises(WeightsError, match=r"no saved_model\.pb"):
        convert_remedis(tmp_path, tmp_path / "x.safetensors")


def test_savedmodel_directory_as_weights_is_converted_once(tmp_path, object_model, monkeypatch):
    monkeypatch.setenv("MEDFOUND_CACHE", str(tmp_path / "cache"))
    first = load_model("cxr-50x1-remedis-m", object_model)
    (cached,) = (tmp_path / "cache" / "converted").glob("*.safetensors")
    stamp = cached.stat().st_mtime_ns
    second = load_model("cxr-50x1-remedis-m", object_model)
    assert cached.stat().st_mtime_ns == stamp  # reused, not converted again
    assert first.weights_sha256 == second.weights_sha256
    x = torch.rand(1, 3, 224, 224)
    torch.testing.assert_close(first.embed(x), second.embed(x))


def test_convert_command(tmp_path, object_model):
    from typer.testing import CliRunner

    from medfound.cli.main import app

    runner = CliRunner()
    out = tmp_path / "cli.safetensors"
    args = ["convert", "remedis", str(object_model), "-o", str(out), "--network-input", "symmetric"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert out.exists() and "resnetv2_50x1_bit.remedis_cxr_m" in result.output
    bad = runner.invoke(app, ["convert", "remedis", str(tmp_path), "-o", str(out)])
    assert bad.exit_code == 2 and "not a SavedModel directory" in bad.output
