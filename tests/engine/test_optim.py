import math

import pytest
import torch
from torch import nn

from medfound.engine.optim import (
    LARS,
    build_optimizer,
    parameter_groups,
    scaled_learning_rate,
    schedule_multiplier,
    warmup_cosine,
)
from medfound.errors import ConfigError


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.Flatten(), nn.LazyLinear(2))


def test_norms_and_biases_are_excluded():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.BatchNorm2d(8), nn.Linear(8, 2)
    )
    decayed, excluded = parameter_groups(model, 1e-6)
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[3].weight)}
    assert len(excluded["params"]) == 1 + 2 + 2 + 1  # conv bias, GN, BN, linear bias
    assert excluded["weight_decay"] == 0.0 and excluded["exclude"]


def test_the_remedis_rule_decays_and_adapts_groupnorm_as_its_name_regexes_did():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3), nn.GroupNorm(4, 8), nn.BatchNorm2d(8), nn.Linear(8, 2)
    )
    model.append(model[3])  # a shared layer is grouped once
    decayed, excluded = parameter_groups(model, 1e-6, exclude="remedis")
    conv, gn, bn, linear = model[:4]
    assert {id(p) for p in decayed["params"]} == {
        id(conv.weight),
        id(gn.weight),
        id(gn.bias),
        id(linear.weight),
    }
    assert {id(p) for p in excluded["params"]} == {
        id(conv.bias),
        id(bn.weight),
        id(bn.bias),
        id(linear.bias),
    }
    with pytest.raises(ConfigError, match="lars_exclude must be one of remedis, norms"):
        parameter_groups(model, 1e-6, exclude="bn")


def test_lars_updates():
    w = nn.Parameter(torch.tensor([3.0, 4.0]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    opt = LARS(
        [{"params": [w]}, {"params": [b], "exclude": True, "weight_decay": 0.0}],
        lr=0.5,
        momentum=0.9,
        weight_decay=0.1,
        trust_coefficient=0.001,
    )
    for step in range(2):
        w.grad = torch.tensor([0.0, 1.0])
        b.grad = torch.tensor([2.0])
        opt.step()
        if step == 0:
            g = torch.tensor([0.3, 1.4])  # grad + wd * w
            ratio = 0.001 * 5.0 / g.norm()
            torch.testing.assert_close(w.detach(), torch.tensor([3.0, 4.0]) - 0.5 * ratio * g)
            assert b.item() == pytest.approx(1.0 - 0.5 * 2.0)  # plain step, no decay, no ratio
    assert b.item() == pytest.approx(0.0 - (0.9 * 1.0 + 0.5 * 2.0))  # plain momentum


def test_schedule_endpoints():
    assert warmup_cosine(0, 10, 110) == 0.0
    assert warmup_cosine(5, 10, 110) == 0.5
    assert warmup_cosine(10, 10, 110) == 1.0
    assert warmup_cosine(60, 10, 110) == pytest.approx(0.5)
    assert warmup_cosine(110, 10, 110) == pytest.approx(0.0)
    assert warmup_cosine(500, 10, 110) == pytest.approx(0.0)


def test_learning_rate_scaling():
    assert scaled_learning_rate(0.3, 512, "linear") == pytest.approx(0.6)
    assert scaled_learning_rate(0.075, 4096, "sqrt") == pytest.approx(0.075 * 64)
    assert scaled_learning_rate(1.0, 6, "none") == 1.0  # Models Genesis: lr 1 at batch 6
    with pytest.raises(ConfigError, match="'sqrt' or 'none'"):
        scaled_learning_rate(0.3, 512, "log")


def test_step_schedule_decays_after_warmup():
    step = schedule_multiplier("step", 4, 100, decay_factor=0.5, decay_every=10)
    assert [step(s) for s in (0, 2, 4, 9, 10, 19, 20, 35)] == [0, 0.5, 1, 1, 0.5, 0.5, 0.25, 0.125]
    with pytest.raises(ConfigError, match="decay_every"):
        schedule_multiplier("step", 0, 100)


def test_plateau_schedule_follows_its_factor():
    factor = [1.0]
    plateau = schedule_multiplier("plateau", 2, 100, plateau_factor=lambda: factor[0])
    assert plateau(1) == 0.5 and plateau(50) == 1.0
    factor[0] = 0.1
    assert plateau(50) == pytest.approx(0.1) and plateau(1) == pytest.approx(0.05)
    cosine = schedule_multiplier("warmup-cosine", 10, 110)
    assert cosine(60) == pytest.approx(warmup_cosine(60, 10, 110))
    with pytest.raises(ConfigError, match="schedule must be"):
        schedule_multiplier("exponential", 0, 10)


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_optimizers_reduce_a_loss(name):
    model = _model()
    x, y = torch.randn(16, 3, 6, 6), torch.randint(0, 2, (16,))
    model(x)  # materialise the lazy layer
    opt = build_optimizer(name, model, lr=0.05 if name != "lars" else 5.0, weight_decay=1e-6)
    losses = []
    for _ in range(30):
        opt.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] and math.isfinite(losses[-1])
