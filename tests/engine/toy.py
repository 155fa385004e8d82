"""Toy methods for the training-loop tests (in-process and under torchrun)."""

import torch
from torch import nn

from medfound.engine.loop_config import LoopConfig
from medfound.methods.base import MethodOutput


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


def loop_config(**changes) -> LoopConfig:
    base = {"batch_size": 16, "max_steps": 40, "optimizer": "sgd", "lr": 1.6, "warmup_epochs": 0.0}
    base |= {"device": "cpu", "workers": 0, "progress": False, "log_every": 10}
    base |= {"tensorboard": False, "weight_decay": 0.0, "momentum": 0.0}
    return LoopConfig(**{**base, **changes})  # lr 1.6 * 16/256 = 0.1 per step


class NormRegression(Regression):
    """Regression through BatchNorm and dropout: needs global statistics and per-rank RNG states.

    `fail_at_step` raises inside the loss at that step (after the checkpoint before it): a crash.
    """

    def __init__(self, dropout: float = 0.0, fail_at_step: int | None = None):
        torch.manual_seed(0)
        self.model = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(dropout), nn.Linear(8, 1)
        )
        self.autocast_seen = []
        self.calls, self.fail_at_step = 0, fail_at_step

    def loss(self, model, inputs):
        self.calls += 1
        if self.fail_at_step is not None and self.calls == self.fail_at_step:
            raise KeyboardInterrupt("simulated crash")
        return super().loss(model, inputs)


class LabelledPoints(Points):
    """Points with a class label: 1 where x . (1, 2, 3, 4) > 0 (labelled items, as fine-tuning reads)."""

    def __getitem__(self, i):
        label = int(self.x[i] @ torch.tensor([1.0, 2.0, 3.0, 4.0]) > 0)
        return {**super().__getitem__(i), "target": torch.tensor(label)}


class Classifier:
    """A supervised method validated by a score: accuracy (higher is better), or, with
    `score_name="error"`, the error rate (lower is better). Records the targets it was given."""

    def __init__(self, higher_is_better: bool = True):
        torch.manual_seed(0)
        self.model = nn.Linear(4, 2)
        self.higher_is_better = higher_is_better
        self.score_name = "accuracy" if higher_is_better else "error"
        self.targets_seen: list[torch.Tensor] = []
        self.scored: list[int] = []  # validation set sizes the score saw

    def prepare(self, images, seed, targets):
        self.targets_seen.append(targets)
        return images, targets

    def loss(self, model, inputs):
        x, y = inputs
        return MethodOutput(loss=nn.functional.cross_entropy(model(x).float(), y))

    def predict(self, model, images):
        return model(images).argmax(1).cpu()

    def score(self, outputs, targets):
        predicted, truth = torch.cat(outputs), torch.cat(targets)
        self.scored.append(len(truth))
        accuracy = float((predicted == truth).float().mean())
        return accuracy if self.higher_is_better else 1 - accuracy

    def export(self, model, run_dir):
        return []
