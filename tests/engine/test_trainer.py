"""The training loop with a toy method: it is method-agnostic, clips, autocasts, refuses bad sizes."""

import json

import pytest
import torch
from torch import nn

from medfound.engine.checkpoint import list_checkpoints, load_checkpoint
from medfound.engine.trainer import LoopConfig, MethodOutput, train
from medfound.errors import ConfigError


class Points(torch.utils.data.Dataset):
    """Items as ImageDataset makes them: 4-vectors whose target is a fixed linear function."""

    def __init__(self, n: int = 64):
        self.x = torch.randn(n, 4, generator=torch.Generator().manual_seed(0))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"index": i, "source": f"point{i}", "tensor": self.x[i]}


class Regression:
    """A method that fits y = x . (1, 2, 3, 4) and records whether autocast was on."""

    def __init__(self):
        torch.manual_seed(0)
        self.model = nn.Linear(4, 1)
        self.autocast_seen: list[bool] = []

    def prepare(self, images, seed):
        return images, images @ torch.tensor([1.0, 2.0, 3.0, 4.0])

    def loss(self, model, inputs):
        x, y = inputs
        self.autocast_seen.append(torch.is_autocast_enabled("cpu"))
        return MethodOutput(loss=(model(x).squeeze(1).float() - y).pow(2).mean())

    def export(self, model, run_dir):
        return []


def _config(**changes) -> LoopConfig:
    base = {"batch_size": 16, "max_steps": 40, "optimizer": "sgd", "lr": 1.6, "warmup_epochs": 0.0}
    base |= {"device": "cpu", "workers": 0, "progress": False, "log_every": 10}
    base |= {"tensorboard": False, "weight_decay": 0.0, "momentum": 0.0}
    return LoopConfig(**{**base, **changes})  # lr 1.6 * 16/256 = 0.1 per step


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_any_method_trains_through_the_loop(tmp_path):
    method = Regression()
    summary = train(method, Points(), _config(), tmp_path)
    losses = _losses(tmp_path)
    assert summary.step == 40 and len(losses) == 4
    assert losses[-1] < 0.01 * losses[0]
    assert not any(method.autocast_seen)


def test_gradient_clipping_bounds_the_step_and_logs_the_norm(tmp_path):
    method = Regression()
    before = [p.detach().clone() for p in method.model.parameters()]
    summary = train(
        method, Points(), _config(max_steps=1, clip_grad_norm=1e-3, log_every=1), tmp_path
    )
    step = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(method.model.parameters(), before, strict=True)]
    )
    assert step.norm() <= 0.1 * 1e-3 * (1 + 1e-5)  # lr times the clipped norm
    assert summary.last_metrics["grad_norm"] > 1e-3  # the norm before clipping


def test_bf16_autocast_reaches_the_method(tmp_path):
    method = Regression()
    train(method, Points(), _config(max_steps=2, precision="bf16"), tmp_path)
    assert method.autocast_seen == [True, True]
    assert all(torch.isfinite(torch.tensor(_losses(tmp_path))))


def test_checkpoint_cadence_and_retention(tmp_path):
    train(
        Regression(),
        Points(),
        _config(max_steps=7, checkpoint_every=2, keep_checkpoints=3),
        tmp_path,
    )
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00000004.pt", "step-00000006.pt", "step-00000007.pt"]  # + the last step
    assert load_checkpoint(list_checkpoints(tmp_path)[-1])["batches_consumed"] == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 128}, "64 images do not fill one batch of 128"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"log_every": 0}, "log_every must be >= 1"),
    ],
)
def test_impossible_settings_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        train(Regression(), Points(), _config(**changes), tmp_path)
