from dataclasses import dataclass, field
from typing import Literal

import pytest

from medfound.engine.config import from_dict, load_config, resolve_run_config, save_config
from medfound.errors import ConfigError


@dataclass
class Optim:
    name: Literal["lars", "sgd"] = "lars"
    lr: float = 0.3


@dataclass
class Run:
    batch_size: int = 512
    temperature: float = 0.1
    crop_scale: tuple[float, float] = (0.08, 1.0)
    init: str | None = None
    optim: Optim = field(default_factory=Optim)


def test_yaml_then_overrides_and_round_trip(tmp_path):
    (tmp_path / "c.yaml").write_text(
        "batch_size: 64\noptim:\n  name: sgd\n  lr: 1\ncrop_scale: [0.2, 1.0]\n"
    )
    config = load_config(Run, tmp_path / "c.yaml", temperature=0.5, init=None)
    assert config == Run(
        batch_size=64, temperature=0.5, crop_scale=(0.2, 1.0), optim=Optim("sgd", 1.0)
    )
    save_config(config, tmp_path / "resolved.yaml")
    assert load_config(Run, tmp_path / "resolved.yaml") == config


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"batchsize": 3}, r"unknown field\(s\) \['batchsize'\]"),
        ({"batch_size": "64"}, r"config\.batch_size: expected int, got '64'"),
        ({"batch_size": True}, r"config\.batch_size: expected int"),
        ({"optim": {"name": "adam"}}, r"config\.optim\.name: 'adam' is not one of"),
        (
            {"optim": {"lr": 0.1, "momentum": 0.9}},
            r"config\.optim: unknown field\(s\) \['momentum'\]",
        ),
        ({"crop_scale": [0.1]}, r"config\.crop_scale: expected 2 values"),
        ({"init": 3}, r"config\.init: 3 is not a"),
    ],
)
def test_bad_fields_are_named(data, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(Run, data)


def test_bad_yaml(tmp_path):
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config(Run, tmp_path / "list.yaml")


@dataclass
class Job:
    data: list[str] = field(default_factory=list)
    lr: float = 0.3
    device: str = "cpu"


def test_list_fields_are_checked_item_by_item():
    assert from_dict(Job, {"data": ["a", "b"]}).data == ["a", "b"]
    with pytest.raises(ConfigError, match=r"config.data\[1\]"):
        from_dict(Job, {"data": ["a", 3]})
    with pytest.raises(ConfigError, match=r"config\.data: expected a list"):
        from_dict(Job, {"data": "a"})


def test_a_config_file_is_checked_even_where_a_flag_overrides_it(tmp_path):
    (tmp_path / "c.yaml").write_text("lr: fast\n")
    with pytest.raises(ConfigError, match="lr"):
        load_config(Job, tmp_path / "c.yaml", lr=0.1)


def test_run_config_new_resumed_and_changed(tmp_path):
    config = resolve_run_config(Job, tmp_path, overrides={"lr": 0.5, "data": ["x"]})
    save_config(config, tmp_path / "config.yaml")
    with pytest.raises(ConfigError, match="already holds a run"):
        resolve_run_config(Job, tmp_path, overrides={"lr": 0.5})
    resumed = resolve_run_config(
        Job, tmp_path, overrides={"device": "cuda"}, resume=True, may_change=frozenset({"device"})
    )
    assert (resumed.lr, resumed.data, resumed.device) == (0.5, ["x"], "cuda")
    with pytest.raises(ConfigError, match="lr differ"):
        resolve_run_config(Job, tmp_path, overrides={"lr": 0.1}, resume=True)
    with pytest.raises(ConfigError, match="holds no run"):
        resolve_run_config(Job, tmp_path / "empty", resume=True)
