from pathlib import Path

import torch

from medfound.engine.global_batchnorm import GlobalBatchNorm, make_global
from tests.distributed import torchrun
from tests.engine.global_bn_ranks import model_and_data, objective


def test_two_ranks_normalise_like_one_process_with_the_whole_batch(tmp_path):
    result = torchrun(str(Path(__file__).with_name("global_bn_ranks.py")), str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr[-3000:]
    model, data = model_and_data()
    model.train()
    output = model(data)
    objective(output).backward()
    expected_buffers = {k: v for k, v in model.state_dict().items() if "running" in k}
    for rank in range(2):
        saved = torch.load(tmp_path / f"out.{rank}")
        torch.testing.assert_close(saved["output"], output[rank * 4 : (rank + 1) * 4].detach())
        for got, expected in zip(saved["grads"], [p.grad for p in model.parameters()], strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)
        for key, value in expected_buffers.items():
            torch.testing.assert_close(saved["buffers"][key], value, rtol=1e-9, atol=1e-12)


def test_conversion_keeps_parameters_and_names_and_acts_locally_in_one_process():
    model, data = model_and_data()
    reference = model(data)
    names = list(model.state_dict())
    converted = make_global(model, torch.device("cpu"))
    assert sum(isinstance(m, GlobalBatchNorm) for m in converted.modules()) == 2
    assert list(converted.state_dict()) == names
    torch.testing.assert_close(converted(data), reference)  # no process group: plain BatchNorm
