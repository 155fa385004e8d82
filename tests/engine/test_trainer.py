"""The training loop with a toy method: it is method-agnostic, clips, autocasts, refuses bad sizes."""

import json

import pytest
import torch

from medfound.engine.checkpoint import list_checkpoints, load_checkpoint
from medfound.engine.trainer import train
from medfound.errors import ConfigError
from tests.engine.toy import (
    Classifier,
    LabelledPoints,
    NormRegression,
    Points,
    Regression,
    loop_config,
)


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_any_method_trains_through_the_loop(tmp_path):
    method = Regression()
    summary = train(method, Points(), loop_config(), tmp_path)
    losses = _losses(tmp_path)
    assert summary.step == 40 and len(losses) == 4
    assert losses[-1] < 0.01 * losses[0]
    assert not any(method.autocast_seen)


def test_gradient_clipping_bounds_the_step_and_logs_the_norm(tmp_path):
    method = Regression()
    before = [p.detach().clone() for p in method.model.parameters()]
    summary = train(
        method, Points(), loop_config(max_steps=1, clip_grad_norm=1e-3, log_every=1), tmp_path
    )
    step = torch.cat(
        [(p.detach() - b).flatten() for p, b in zip(method.model.parameters(), before, strict=True)]
    )
    assert step.norm() <= 0.1 * 1e-3 * (1 + 1e-5)  # lr times the clipped norm
    assert summary.last_metrics["grad_norm"] > 1e-3  # the norm before clipping


def test_bf16_autocast_reaches_the_method(tmp_path):
    method = Regression()
    train(method, Points(), loop_config(max_steps=2, precision="bf16"), tmp_path)
    assert method.autocast_seen == [True, True]
    assert all(torch.isfinite(torch.tensor(_losses(tmp_path))))


def test_checkpoint_cadence_and_retention(tmp_path):
    train(
        Regression(),
        Points(),
        loop_config(max_steps=7, checkpoint_every=2, keep_checkpoints=3),
        tmp_path,
    )
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step-00000004.pt", "step-00000006.pt", "step-00000007.pt"]  # + the last step
    assert load_checkpoint(list_checkpoints(tmp_path)[-1])["batches_consumed"] == 7


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"batch_size": 128}, "64 items do not fill one batch of 128"),
        ({"max_steps": 0}, "max_steps must be >= 1"),
        ({"log_every": 0}, "log_every must be >= 1"),
        ({"schedule": "step"}, "schedule step needs decay_every"),
        ({"schedule": "plateau"}, "schedule plateau needs validation"),
        ({"early_stop_patience": 3}, "early_stop_patience needs validation"),
        ({"decay_factor": 1.5}, r"decay_factor must be in \(0, 1\]"),
        ({"validate_every": 5}, "validate_every is set but there are no validation data"),
    ],
)
def test_impossible_settings_are_refused_by_name(tmp_path, changes, message):
    with pytest.raises(ConfigError, match=message):
        train(Regression(), Points(), loop_config(**changes), tmp_path)


def _rows(run, name: str = "metrics") -> list[dict]:
    return [json.loads(line) for line in (run / f"{name}.jsonl").read_text().splitlines()]


def test_a_new_run_refuses_a_folder_holding_another_runs_checkpoints(tmp_path):
    old = tmp_path / "checkpoints" / "step-00010000.pt"
    old.parent.mkdir()
    old.write_bytes(b"an older run")
    with pytest.raises(ConfigError, match="is not empty"):
        train(Regression(), Points(), loop_config(max_steps=2, checkpoint_every=1), tmp_path)
    assert old.read_bytes() == b"an older run"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["checkpoints", "step-00010000.pt"]


def test_resume_checks_the_settings_in_the_python_api_too(tmp_path):
    train(Regression(), Points(), loop_config(max_steps=2), tmp_path)
    with pytest.raises(ConfigError, match="lr differ"):
        train(Regression(), Points(), loop_config(max_steps=2, lr=0.5), tmp_path, resume=True)
    with pytest.raises(ConfigError, match="holds no run"):
        train(Regression(), Points(), loop_config(), tmp_path / "new", resume=True)


def test_resume_falls_back_past_an_unreadable_newest_checkpoint_and_ends_identical(tmp_path):
    config = loop_config(max_steps=6, checkpoint_every=2, keep_checkpoints=3)
    whole = Regression()
    train(whole, Points(), config, tmp_path / "whole")
    run = tmp_path / "run"
    train(Regression(), Points(), config, run)
    checkpoints = list_checkpoints(run)
    checkpoints[-1].unlink()  # the run died before step 6 was saved ...
    checkpoints[-2].write_bytes(b"")  # ... and step 4's data never reached the disk
    resumed = Regression()
    summary = train(resumed, Points(), config, run, resume=True)
    assert summary.start_step == 2 and summary.step == 6
    for a, b in zip(whole.model.parameters(), resumed.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_logged_row_that_spans_a_resume_averages_every_step_it_claims(tmp_path):
    config = loop_config(max_steps=8, log_every=4, checkpoint_every=3)
    train(NormRegression(), Points(), config, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        train(NormRegression(fail_at_step=4), Points(), config, tmp_path / "run")
    train(NormRegression(), Points(), config, tmp_path / "run", resume=True)
    whole, resumed = _rows(tmp_path / "whole"), _rows(tmp_path / "run")
    assert [r["step"] for r in resumed] == [4, 8]
    assert [r["steps_averaged"] for r in resumed] == [4, 4]
    for a, b in zip(whole, resumed, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)


def test_two_ranks_train_as_one_process_resume_each_ranks_state_and_share_failures(tmp_path):
    from tests.distributed import torchrun

    done = torchrun("-m", "tests.engine.train_ranks", str(tmp_path))
    assert done.returncode == 0, done.stderr[-3000:]
    results = torch.load(tmp_path / "results.pt", weights_only=True)

    single = NormRegression()
    train(single, Points(), loop_config(max_steps=8, log_every=2), tmp_path / "one")
    for key, value in single.model.state_dict().items():
        torch.testing.assert_close(results["two_ranks"][key], value, rtol=1e-5, atol=1e-6)
    one, two = _rows(tmp_path / "one"), _rows(tmp_path / "two_ranks")
    assert [r["step"] for r in two] == [2, 4, 6, 8]
    for a, b in zip(one, two, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    for key, value in results["whole"].items():
        torch.testing.assert_close(results["resumed"][key], value, rtol=0, atol=0)
    assert results["export_failure"] == ["rank 0 failed: OSError: disk full"] * 2  # nobody hangs
    # A scored validation sees the whole set, is scored once on rank 0 (every rank then decides
    # alike from its figure), and equals one process's.
    assert results["scored_sizes"] == [[20, 20], []]
    config = loop_config(max_steps=6, validate_every=3, batch_size=8, lr=4.0)
    train(
        Classifier(),
        LabelledPoints(),
        config,
        tmp_path / "scored_one",
        val_dataset=LabelledPoints(20),
    )
    one = _rows(tmp_path / "scored_one", "validation")
    two = _rows(tmp_path / "scored", "validation")
    assert [r["val_accuracy"] for r in one] == [r["val_accuracy"] for r in two]


def test_the_metrics_log_is_closed_when_a_step_fails(tmp_path, monkeypatch):
    from medfound.engine import trainer

    closed = []
    real_close = trainer.MetricsLog.close
    monkeypatch.setattr(
        trainer.MetricsLog, "close", lambda self: closed.append(True) or real_close(self)
    )
    with pytest.raises(KeyboardInterrupt):
        train(NormRegression(fail_at_step=3), Points(), loop_config(log_every=1), tmp_path)
    assert closed == [True]
    assert [r["step"] for r in _rows(tmp_path)] == [1, 2]
