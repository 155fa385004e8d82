from pathlib import Path

import numpy as np
import pytest
import torch

from medfound.methods.nt_xent import nt_xent
from tests.distributed import torchrun
from tests.methods.nt_xent_ranks import model_and_data


def naive_nt_xent(z: np.ndarray, temperature: float) -> float:
    """The original's loss written out anchor by anchor, in float64."""
    z = z / np.linalg.norm(z, axis=1, keepdims=True)
    h1, h2 = np.split(z, 2)
    n = len(h1)
    total = 0.0
    for anchors, others in ((h1, h2), (h2, h1)):
        losses = []
        for i in range(n):
            positive = np.exp(anchors[i] @ others[i] / temperature)
            cross = sum(np.exp(anchors[i] @ others[j] / temperature) for j in range(n))
            same = sum(np.exp(anchors[i] @ anchors[j] / temperature) for j in range(n) if j != i)
            losses.append(-np.log(positive / (cross + same)))
        total += np.mean(losses)
    return total


@pytest.mark.parametrize("temperature", [0.1, 0.5])
def test_value_matches_the_original_definition(temperature):
    z = torch.randn(12, 16, dtype=torch.float64)
    out = nt_xent(z, temperature)
    assert out.loss.item() == pytest.approx(naive_nt_xent(z.numpy(), temperature), rel=1e-9)


def test_twice_lightly():
    from lightly import loss as lightly_loss  # in the dev extras: missing must fail, not skip

    z = torch.randn(16, 32)
    h1, h2 = z.chunk(2)
    theirs = lightly_loss.NTXentLoss(temperature=0.2)(h1, h2)
    assert nt_xent(z, 0.2).loss.item() == pytest.approx(2 * theirs.item(), rel=1e-5)


def test_accuracy_and_entropy():
    z = torch.cat([torch.eye(4), torch.eye(4)]) * 10  # each view-2 row equals its positive
    out = nt_xent(z, 0.05)
    assert out.accuracy.item() == 1.0
    assert out.entropy.item() < 1e-3
    assert nt_xent(torch.ones(8, 4), 0.1).entropy.item() == pytest.approx(np.log(4), rel=1e-5)


def test_two_ranks_equal_one_process_with_the_whole_batch(tmp_path):
    result = torchrun(str(Path(__file__).with_name("nt_xent_ranks.py")), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    model, data = model_and_data()
    loss = nt_xent(model(data), 0.2).loss
    loss.backward()
    for rank in range(2):
        saved = torch.load(tmp_path / f"out.{rank}")
        assert saved["loss"].item() == pytest.approx(loss.item(), rel=1e-10)
        for got, expected in zip(saved["grads"], [p.grad for p in model.parameters()], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
