"""Run under torchrun by test_global_batchnorm: each rank normalises its half of the batch."""

import os
import sys

import torch
import torch.distributed as dist

from medfound.engine.global_batchnorm import make_global


def model_and_data():
    """The same small conv + BN net and batch in every process (float64)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(),
        torch.nn.Linear(4 * 4 * 4, 5), torch.nn.BatchNorm1d(5, momentum=None),
    ).double()  # fmt: skip
    data = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    return model, data


def objective(output: torch.Tensor) -> torch.Tensor:
    """A per-item loss averaged over the batch, that depends on every output unevenly."""
    return (output.pow(3) * torch.arange(1, 6, dtype=output.dtype)).sum(1).mean()


def main(out_file: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, data = model_and_data()
    model = make_global(model, torch.device("cpu")).train()
    part = len(data) // world
    output = model(data[rank * part : (rank + 1) * part])
    loss = objective(output)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for g in grads:  # what DDP does: average the gradients over ranks
        dist.all_reduce(g)
        g /= world
    buffers = {k: v.clone() for k, v in model.state_dict().items() if "running" in k}
    torch.save(
        {"output": output.detach(), "grads": grads, "buffers": buffers}, f"{out_file}.{rank}"
    )
    dist.barrier()
    dist.destroy_process_group()
    # The results are written and the group is closed. Skip the interpreter's teardown: after
    # autograd collectives on gloo it aborts now and then ("terminate called without an active
    # exception", ~1 run in 6 here), which says nothing about what this test checks.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
