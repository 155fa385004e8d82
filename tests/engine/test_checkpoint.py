import random

import numpy as np
import pytest
import torch

from medfound.engine.checkpoint import (
    list_checkpoints,
    load_checkpoint,
    load_newest_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from medfound.errors import WeightsError


def _draws():
    return random.random(), float(np.random.rand()), float(torch.rand(1))


def test_checkpoint_round_trip_and_random_streams(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    path = save_checkpoint(
        tmp_path,
        7,
        {"model": model.state_dict(), "optimizer": opt.state_dict(), "rng": rng_state()},
    )
    expected = _draws()
    _draws()  # the run goes on, then dies
    state = load_checkpoint(path)
    restore_rng(state["rng"])
    assert _draws() == expected
    assert state["step"] == 7
    fresh = torch.nn.Linear(3, 2)
    fresh.load_state_dict(state["model"])
    torch.testing.assert_close(fresh.weight, model.weight)
    opt2 = torch.optim.SGD(fresh.parameters(), lr=0.1, momentum=0.9)
    opt2.load_state_dict(state["optimizer"])
    assert "momentum_buffer" in opt2.state_dict()["state"][0]


def test_an_unreadable_newest_checkpoint_falls_back_to_the_one_before(tmp_path, caplog):
    for step in (10, 20):
        save_checkpoint(tmp_path, step, {"x": torch.full((3,), float(step))}, keep=2)
    newest = list_checkpoints(tmp_path)[-1]
    newest.write_bytes(b"")  # what a power loss before the data reached the disk leaves
    path, state = load_newest_checkpoint(tmp_path)
    assert path.name == "step-00000010.pt" and state["step"] == 10
    assert "step-00000020.pt: unreadable checkpoint" in caplog.text
    assert (tmp_path / "checkpoints" / "step-00000020.pt.unreadable").exists()
    kept = save_checkpoint(tmp_path, 13, {"x": torch.zeros(1)}, keep=1)  # the run goes on
    assert list_checkpoints(tmp_path) == [kept]  # never the file just written
    assert load_newest_checkpoint(tmp_path)[1]["step"] == 13
    path = kept
    path.write_bytes(b"junk")
    with pytest.raises(WeightsError, match="no readable checkpoint"):
        load_newest_checkpoint(tmp_path)
    assert load_newest_checkpoint(tmp_path / "elsewhere") is None


def test_only_the_newest_are_kept_and_partials_ignored(tmp_path):
    for step in (10, 20, 30):
        save_checkpoint(tmp_path, step, {}, keep=2)
    (tmp_path / "checkpoints" / ".step-00000040.pt.abc.partial").write_bytes(b"half")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000020.pt", "step-00000030.pt"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path, 5, {})
    assert list(tmp_path.rglob("*")) == [tmp_path / "checkpoints"]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, 1, {"x": torch.zeros(3)})
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(WeightsError, match=r"step-00000001\.pt: unreadable checkpoint"):
        load_checkpoint(path)
