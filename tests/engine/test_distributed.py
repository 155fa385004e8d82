import pytest

from medfound.engine import distributed


@pytest.mark.parametrize(
    ("cores", "ranks", "expected"), [(2, 1, 1), (16, 1, 8), (16, 4, 2), (4, 8, 1)]
)
def test_default_workers_share_the_cores_among_the_ranks_of_a_machine(
    monkeypatch, cores, ranks, expected
):
    monkeypatch.setattr(distributed.os, "cpu_count", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    assert distributed.default_workers() == expected


def test_each_cuda_rank_binds_its_own_gpu_to_the_process_group(monkeypatch):
    """Without set_device and device_id, NCCL's object collectives put every rank on GPU 0."""
    import torch

    calls = {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(
        torch.cuda, "set_device", lambda device: calls.setdefault("current", device)
    )
    monkeypatch.setattr(
        distributed.dist,
        "init_process_group",
        lambda backend, **kw: calls.update(backend=backend, **kw),
    )
    ctx = distributed.init_distributed(torch.device("cuda", 1))
    assert (ctx.rank, ctx.world_size, ctx.local_rank) == (1, 2, 1)
    assert calls == {
        "current": torch.device("cuda", 1),
        "backend": "nccl",
        "device_id": torch.device("cuda", 1),
    }


def test_a_process_group_opened_for_a_task_is_closed_when_it_fails(monkeypatch):
    import torch

    events = []
    initialised = {"yes": False}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(distributed.dist, "is_initialized", lambda: initialised["yes"])

    def init(backend, **kw):
        initialised["yes"] = True
        events.append(("init", backend))

    def destroy():
        initialised["yes"] = False
        events.append(("destroy",))

    monkeypatch.setattr(distributed.dist, "init_process_group", init)
    monkeypatch.setattr(distributed.dist, "destroy_process_group", destroy)
    with pytest.raises(RuntimeError, match="boom"), distributed.distributed(torch.device("cpu")):
        raise RuntimeError("boom")
    assert events == [("init", "gloo"), ("destroy",)]
    initialised["yes"] = True  # a group the caller opened is left open
    with distributed.distributed(torch.device("cpu")):
        pass
    assert events == [("init", "gloo"), ("destroy",)]


def test_one_gpu_index_for_every_rank_is_refused(monkeypatch):
    from medfound.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(distributed.torch.cuda, "is_available", lambda: True)
    with pytest.raises(ConfigError, match="--device cuda:1: under torchrun every rank"):
        distributed.resolve_device("cuda:1", local_rank=0)
    assert distributed.resolve_device("cuda", local_rank=1).index == 1
