import numpy as np
import pytest
import torch

from medfound.convert.simclr import convert_simclr, creation_order
from medfound.convert.tf_comparison import relative_error
from medfound.errors import WeightsError
from medfound.models import load_model
from tests.convert import tf_resnet_v1


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    values, plan = tf_resnet_v1.build_variables(width=1)
    extra = {  # what real SimCLR checkpoints also hold: EMA and momentum copies, a projection head
        "base_model/conv2d/kernel/ExponentialMovingAverage": values["base_model/conv2d/kernel"],
        "base_model/conv2d_5/kernel/Momentum": np.zeros_like(values["base_model/conv2d_5/kernel"]),
        "head_contrastive/nl_0/dense/kernel": np.ones((2048, 2048), np.float32),
        "head_contrastive/nl_0/batch_normalization_53/gamma": np.ones(2048, np.float32),
    }
    prefix = tf_resnet_v1.save_checkpoint(
        tmp_path_factory.mktemp("simclr") / "model.ckpt", values, extra
    )
    return prefix, values, plan


def test_projection_shortcut_comes_first_in_creation_order():
    convs, norms = creation_order(50)
    assert convs[:5] == [
        "conv1",
        "layer1.0.downsample.0",
        "layer1.0.conv1",
        "layer1.0.conv2",
        "layer1.0.conv3",
    ]
    assert len(convs) == len(norms) == 53


@pytest.mark.parametrize(
    "size", [64, 66]
)  # even and odd stem outputs: TF 'SAME' pooling pads differ
def test_simclr_checkpoint_embeds_like_tensorflow(tmp_path, checkpoint, size):
    import tensorflow as tf

    prefix, values, plan = checkpoint
    card = convert_simclr(prefix, tmp_path / "simclr.safetensors")
    assert card.name == "simclr:r50x1" and card.input_mean is None  # SimCLR feeds [0, 1] as is
    x = np.random.default_rng(size).uniform(0, 1, (2, size, size, 3)).astype(np.float32)
    theirs = tf_resnet_v1.forward(tf, {k: tf.constant(v) for k, v in values.items()}, plan, x)
    theirs = theirs.numpy().mean(axis=(1, 2))
    model = load_model("simclr:r50x1", tmp_path / "simclr.safetensors")
    ours = model.embed(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert relative_error(ours, theirs) < 1e-3


def test_simclr_wrong_model_is_refused(tmp_path, checkpoint):
    with pytest.raises(
        WeightsError, match=r"checkpoint is a simclr:r50x1, but --model is 'simclr:r50x2'"
    ):
        convert_simclr(checkpoint[0], tmp_path / "x.safetensors", model="simclr:r50x2")


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(
        WeightsError, match="neither a SavedModel directory nor a checkpoint prefix"
    ):
        convert_simclr(tmp_path / "nothing", tmp_path / "x.safetensors")


def test_convert_simclr_command(tmp_path, checkpoint):
    from typer.testing import CliRunner

    from medfound.cli.main import app

    out = tmp_path / "cli.safetensors"
    result = CliRunner().invoke(app, ["convert", "simclr", checkpoint[0], "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "simclr:r50x1" in result.output and out.exists()


def test_checkpoint_prefix_as_weights(tmp_path, checkpoint, monkeypatch):
    monkeypatch.setenv("MEDFOUND_CACHE", str(tmp_path / "cache"))
    converted = convert_simclr(checkpoint[0], tmp_path / "direct.safetensors")
    direct = load_model(converted.name, tmp_path / "direct.safetensors")
    cached = load_model("simclr:r50x1", checkpoint[0])
    assert len(list((tmp_path / "cache" / "converted").glob("*.safetensors"))) == 1
    x = torch.rand(1, 3, 64, 64)
    torch.testing.assert_close(cached.embed(x), direct.embed(x))
