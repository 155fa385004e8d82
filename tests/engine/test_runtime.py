import pytest

from medfound.engine import runtime


@pytest.mark.parametrize(
    ("cores", "ranks", "expected"), [(2, 1, 1), (16, 1, 8), (16, 4, 2), (4, 8, 1)]
)
def test_default_workers_share_the_cores_among_the_ranks_of_a_machine(
    monkeypatch, cores, ranks, expected
):
    monkeypatch.setattr(runtime.os, "cpu_count", lambda: cores)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", str(ranks))
    assert runtime.default_workers() == expected
