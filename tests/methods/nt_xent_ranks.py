"""Run under torchrun by test_nt_xent: each rank takes its half of the batch, saves loss and gradients."""

import os
import sys

import torch
import torch.distributed as dist

from medfound.methods.nt_xent import nt_xent


def model_and_data():
    """The same model and [view-1; view-2] batch in every process."""
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 6).double()
    data = torch.randn(16, 10, dtype=torch.float64)
    return model, data


def main(out_file: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model, data = model_and_data()
    v1, v2 = data.chunk(2)
    part = len(v1) // world
    local = torch.cat([v1[rank * part : (rank + 1) * part], v2[rank * part : (rank + 1) * part]])
    loss = nt_xent(model(local), 0.2).loss
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    for g in grads:  # what DDP does: average the gradients over ranks
        dist.all_reduce(g)
        g /= world
    dist.all_reduce(loss.detach_())
    torch.save({"loss": loss / world, "grads": grads}, f"{out_file}.{rank}")
    dist.barrier()
    dist.destroy_process_group()
    # The results are written and the group is closed. Skip the interpreter's teardown: after
    # autograd collectives on gloo it aborts now and then ("terminate called without an active
    # exception", ~1 run in 6 here), which says nothing about what this test checks.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main(sys.argv[1])
